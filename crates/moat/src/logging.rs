//! The hub's log: `[log] format = "text"` (tracing's readable lines) or `"json"`, one flat
//! JSON object per line for a log shipper (Loki, Elasticsearch, …).
//!
//! Every line logged while the hub handles something carries that thing's id, because the
//! listeners run each unit of work in a span: `request{request_id, method, path}` for an
//! HTTP request (the id is also the `x-request-id` response header; over HTTP/1.1 it sits
//! inside the connection's `https{peer}`), `mqtt{conn_id, peer, mode, identity}` for an MQTT
//! connection from accept to close. Text lines show the spans as a prefix:
//!
//! ```text
//! … INFO mqtt{conn_id=7 peer=10.0.0.5:50112 mode="mtls" identity="sensor-17"}: moat_broker::…: connected
//! ```
//!
//! JSON lines put the span fields (outermost first, an inner span's field winning) and then
//! the event's own fields at the top level, so a query filters on `request_id` or `conn_id`
//! without knowing which span holds it:
//!
//! ```text
//! {"timestamp":"…Z","level":"INFO","target":"moat_broker::…","message":"connected",
//!  "conn_id":7,"peer":"10.0.0.5:50112","mode":"mtls","identity":"sensor-17",
//!  "client_id":"sensor-17","spans":["mqtt"]}
//! ```
//!
//! (tracing-subscriber's own JSON format nests them instead: `span` holds only the innermost
//! span's fields and `spans` an array of objects, which neither Loki's `json` stage nor an
//! Elasticsearch mapping flattens into one key per id.)

use moat_node::config::LogConfig;
use serde::Serializer as _;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys a JSON line always has (`message` when the event has one); a field of the same name
/// is written as `field.NAME` instead of replacing them.
const RESERVED: [&str; 4] = ["timestamp", "level", "target", "spans"];

/// Installs the global subscriber: stderr, `RUST_LOG` if set, else `[log] level`. Text is
/// coloured only on a terminal (and without `NO_COLOR`): escape codes in a file or the
/// journal make lines harder to read and to grep.
pub fn init(cfg: &LogConfig) {
    use std::io::IsTerminal;
    // The NATS client logs every dropped message of a slow subscription at info; the cluster
    // counts and reports those itself (moat_cluster_messages_total{outcome="dropped"}).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},async_nats=warn", cfg.level)));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = if cfg.format == "json" {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// One JSON object per event, span and event fields flattened (see the module docs). Span
/// fields are kept by [`JsonFields`] as a JSON object per span, which this reads back (a
/// parse of a few fields per span per line: the price of tracing-subscriber's storage).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = EventFields::default();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(span.name());
                let ext = span.extensions();
                let Some(recorded) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(map) = serde_json::from_str::<Map<String, Value>>(recorded) {
                    for (k, v) in map {
                        fields.insert(&k, v);
                    }
                }
            }
        }
        event.record(&mut fields);
        let meta = event.metadata();

        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::new(&mut out);
        let write = |ser: &mut serde_json::Serializer<&mut Vec<u8>>| {
            let mut map = ser.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            map.serialize_entry(
                "target",
                fields.log_target.as_deref().unwrap_or(meta.target()),
            )?;
            if let Some(m) = &fields.message {
                map.serialize_entry("message", m)?;
            }
            for (k, v) in &fields.values {
                map.serialize_entry(k, v)?;
            }
            if !spans.is_empty() {
                map.serialize_entry("spans", &spans)?;
            }
            map.end()
        };
        write(&mut ser).map_err(|_| fmt::Error)?;
        let line = std::str::from_utf8(&out).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// The fields of a line: the spans', then the event's.
#[derive(Debug, Default)]
struct EventFields {
    values: Map<String, Value>,
    message: Option<String>,
    /// The original target of a `log` crate record (tracing's is "log").
    log_target: Option<String>,
}

impl EventFields {
    fn insert(&mut self, name: &str, value: Value) {
        let name = name.strip_prefix("r#").unwrap_or(name);
        if let Some(log_field) = name.strip_prefix("log.") {
            // A `log` crate record: keep its target; tracing's metadata has the rest.
            if log_field == "target" {
                self.log_target = value.as_str().map(str::to_owned);
            }
            return;
        }
        if RESERVED.contains(&name) || name == "message" {
            self.values.insert(format!("field.{name}"), value);
        } else {
            self.values.insert(name.to_owned(), value);
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            name => self.insert(name, Value::from(value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            name => self.insert(name, Value::from(format!("{value:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, PoisonError};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `f` logs, at TRACE.
    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    #[test]
    fn span_fields_are_flattened_inner_first_then_the_event() {
        let v = lines(|| {
            let outer = tracing::info_span!("https", peer = "10.0.0.1:4000", shared = 1);
            let _o = outer.enter();
            let inner = tracing::info_span!(
                "request",
                request_id = "ab12",
                shared = 2,
                late = tracing::field::Empty
            );
            let _i = inner.enter();
            inner.record("late", "yes");
            tracing::warn!(status = 401u16, ok = false, detail = ?("x", 1), "refused {}", "here");
        });
        assert_eq!(v.len(), 1, "{v:?}");
        let l = &v[0];
        assert_eq!(l["level"], "WARN");
        assert_eq!(l["message"], "refused here");
        assert_eq!(l["target"], "moat::logging::tests");
        assert_eq!(l["peer"], "10.0.0.1:4000");
        assert_eq!(l["request_id"], "ab12");
        assert_eq!(l["shared"], 2, "the inner span wins");
        assert_eq!(l["late"], "yes", "fields recorded after the span began");
        assert_eq!(l["status"], 401);
        assert_eq!(l["ok"], false);
        assert_eq!(l["detail"], "(\"x\", 1)");
        assert_eq!(l["spans"], serde_json::json!(["https", "request"]));
        let ts = l["timestamp"].as_str().expect("timestamp");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{ts}: {e}"));
    }

    #[test]
    fn reserved_names_do_not_replace_the_line_keys_and_no_span_no_spans() {
        let v = lines(|| {
            let s = tracing::info_span!("mqtt", level = "span's", conn_id = 9u64);
            s.in_scope(|| tracing::debug!(target = "event's", "x"));
            tracing::info!(n = -3i64, "outside");
        });
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0]["level"], "DEBUG");
        assert_eq!(v[0]["field.level"], "span's");
        assert_eq!(v[0]["target"], "moat::logging::tests");
        assert_eq!(v[0]["field.target"], "event's");
        assert_eq!(v[0]["conn_id"], 9);
        assert_eq!(v[1]["message"], "outside");
        assert_eq!(v[1]["n"], -3);
        assert!(v[1].get("spans").is_none() && v[1].get("conn_id").is_none());
    }
}
