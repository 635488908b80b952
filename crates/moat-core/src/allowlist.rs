//! The factory allow-list: the serials a manufacturer will produce, uploaded as CSV before
//! the devices reach the EST station. A file is taken whole or not at all: every line is
//! checked and every bad line is reported with its number.
//!
//! ```text
//!   serial,mac,model            ← optional header (first line only)
//!   SN-0001,AA:BB:CC:00:00:01,Sensor v2
//!   SN-0002,,Sensor v2          ← MAC and model are optional
//!   SN-0003
//! ```

use crate::{Actor, Error, Hub, validate_device_id};
use moat_store::{AllowlistEntry, FactoryInfo};
use std::collections::HashMap;
use time::OffsetDateTime;

/// Most serials one upload may carry (a larger batch is several files).
pub const MAX_ALLOWLIST_ENTRIES: usize = 100_000;
/// Longest model name.
pub const MAX_MODEL_LEN: usize = 64;
/// Bad lines named one by one in an error before the rest are only counted.
const MAX_REPORTED: usize = 20;

/// One line of an allow-list file that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowlistLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// What it says.
    pub factory: FactoryInfo,
}

/// Parses and checks an allow-list CSV (`serial[,mac[,model]]` per line; a first line whose
/// first field is `serial` is a header; blank lines and lines starting with `#` are skipped;
/// fields may be double-quoted). Serials become device ids, so they follow
/// [`validate_device_id`]; MACs are 6 octets (`:`, `-` or no separators) and come back as
/// lowercase `aa:bb:cc:dd:ee:ff`. Any bad line refuses the whole file with every bad line's
/// number and reason.
pub fn parse_allowlist_csv(text: &str) -> Result<Vec<AllowlistLine>, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(unquote).collect();
        if std::mem::take(&mut first)
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("serial"))
        {
            continue;
        }
        match parse_line(&fields) {
            Ok(factory) => match seen.get(&factory.serial) {
                Some(prev) => problems.push(format!(
                    "line {n}: serial {:?} repeats line {prev}",
                    factory.serial
                )),
                None => {
                    seen.insert(factory.serial.clone(), n);
                    lines.push(AllowlistLine { line: n, factory });
                }
            },
            Err(why) => problems.push(format!("line {n}: {why}")),
        }
    }
    if lines.len() > MAX_ALLOWLIST_ENTRIES {
        problems.push(format!(
            "{} serials; at most {MAX_ALLOWLIST_ENTRIES} per upload (split the file)",
            lines.len()
        ));
    }
    if !problems.is_empty() {
        return Err(refused(problems));
    }
    if lines.is_empty() {
        return Err(Error::Invalid(
            "the allow-list file has no serials (one `serial[,mac[,model]]` per line)".into(),
        ));
    }
    Ok(lines)
}

/// The whole-file refusal naming the bad lines.
fn refused(mut problems: Vec<String>) -> Error {
    let more = problems.len().saturating_sub(MAX_REPORTED);
    problems.truncate(MAX_REPORTED);
    let mut msg = format!(
        "allow-list refused, nothing stored: {}",
        problems.join("; ")
    );
    if more > 0 {
        msg.push_str(&format!("; and {more} more bad lines"));
    }
    Error::Invalid(msg)
}

fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .map_or(f, str::trim)
}

fn parse_line(fields: &[&str]) -> Result<FactoryInfo, String> {
    if fields.len() > 3 {
        return Err(format!(
            "{} fields; expected serial[,mac[,model]]",
            fields.len()
        ));
    }
    let serial = fields.first().copied().unwrap_or_default();
    if serial.is_empty() {
        return Err("the serial is empty".into());
    }
    validate_device_id(serial)
        .map_err(|_| format!("serial {serial:?} must be 1 to 64 of A-Z a-z 0-9 . _ : - (it becomes the device id), not starting with . or -"))?;
    let mac = match fields.get(1).copied().filter(|m| !m.is_empty()) {
        Some(m) => Some(normalise_mac(m).ok_or_else(|| {
            format!("MAC {m:?} is not 6 hex octets (aa:bb:cc:dd:ee:ff, aa-bb-…, or aabbccddeeff)")
        })?),
        None => None,
    };
    let model = match fields.get(2).copied().filter(|m| !m.is_empty()) {
        Some(m) if m.chars().count() > MAX_MODEL_LEN || m.chars().any(char::is_control) => {
            return Err(format!(
                "model {m:?} must be at most {MAX_MODEL_LEN} printable characters"
            ));
        }
        Some(m) => Some(m.to_string()),
        None => None,
    };
    Ok(FactoryInfo {
        serial: serial.to_string(),
        mac,
        model,
    })
}

/// `aa:bb:cc:dd:ee:ff` from any of the usual spellings, or None.
fn normalise_mac(m: &str) -> Option<String> {
    let hex: String = m.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    let separated = hex.len() != m.len();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // With separators, they must split the octets (aa:bb:…), not fall anywhere.
    if separated && (m.len() != 17 || m.chars().skip(2).step_by(3).any(|c| c != ':' && c != '-')) {
        return None;
    }
    let lower = hex.to_ascii_lowercase();
    let octets: Vec<&str> = (0..6).map(|i| &lower[i * 2..i * 2 + 2]).collect();
    Some(octets.join(":"))
}

impl Hub {
    /// Adds the serials of an allow-list CSV ([`parse_allowlist_csv`]). All or nothing: a bad
    /// line, or a serial already on the allow-list, refuses the whole file. Returns how many
    /// serials were added.
    pub async fn add_allowlist(&self, csv: &str, actor: &Actor) -> Result<usize, Error> {
        let result = async {
            let lines = parse_allowlist_csv(csv)?;
            let serials: Vec<String> = lines.iter().map(|l| l.factory.serial.clone()).collect();
            let listed = self.store().allowlisted(&serials).await?;
            if !listed.is_empty() {
                let line_of: HashMap<&str, usize> = lines
                    .iter()
                    .map(|l| (l.factory.serial.as_str(), l.line))
                    .collect();
                return Err(refused(
                    listed
                        .iter()
                        .map(|s| {
                            format!(
                                "line {}: serial {s:?} is already on the allow-list",
                                line_of.get(s.as_str()).copied().unwrap_or(0)
                            )
                        })
                        .collect(),
                ));
            }
            let now = OffsetDateTime::now_utc();
            let entries: Vec<AllowlistEntry> = lines
                .into_iter()
                .map(|l| AllowlistEntry {
                    factory: l.factory,
                    added_at: now,
                    enrolled_at: None,
                    device_id: None,
                    retired_at: None,
                })
                .collect();
            self.store()
                .add_allowlist(&entries)
                .await
                .map_err(|e| match e {
                    // Listed by a concurrent upload since the check above.
                    moat_store::Error::Conflict(what) => Error::Conflict {
                        kind: "allow-list entry",
                        id: what,
                    },
                    other => other.into(),
                })?;
            Ok(entries.len())
        }
        .await;
        self.audited(actor, "allowlist.add", None, result).await
    }

    /// Allow-list entries by serial, after `after`, at most `limit` (1..=1000).
    pub async fn list_allowlist(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AllowlistEntry>, Error> {
        Ok(self
            .store()
            .list_allowlist(after, limit.clamp(1, 1000))
            .await?)
    }

    /// Lets an enrolled serial enroll once more (e.g. the device lost the certificate on the
    /// line). Its earlier certificates stay valid; revoke them if they must not be used. The
    /// serial of a decommissioned device is refused (409): it can never enroll again.
    pub async fn reset_allowlist(
        &self,
        serial: &str,
        actor: &Actor,
    ) -> Result<AllowlistEntry, Error> {
        let result = async {
            let not_listed = || Error::NotFound {
                kind: "allow-list serial",
                id: serial.to_string(),
            };
            if let Some(e) = self.store().allowlist_entry(serial).await?
                && e.retired_at.is_some()
            {
                return Err(Error::State(format!(
                    "serial {serial:?} belongs to a decommissioned device{}: it can never enroll again",
                    e.device_id.map(|d| format!(" ({d})")).unwrap_or_default()
                )));
            }
            match self.store().reset_allowlist(serial).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::State(format!(
                        "serial {serial:?} has not enrolled yet; there is nothing to reset"
                    )));
                }
                Err(moat_store::Error::NotFound(_)) => return Err(not_listed()),
                Err(e) => return Err(e.into()),
            }
            self.store()
                .allowlist_entry(serial)
                .await?
                .ok_or_else(not_listed)
        }
        .await;
        self.audited(actor, "allowlist.reset", Some(serial), result)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(usize, String, Option<String>, Option<String>)> {
        parse_allowlist_csv(text)
            .expect("valid")
            .into_iter()
            .map(|l| (l.line, l.factory.serial, l.factory.mac, l.factory.model))
            .collect()
    }

    #[test]
    fn header_blank_lines_quotes_and_mac_forms() {
        let text = "\u{feff}Serial,MAC,Model\r\n\r\nSN-1,AA:BB:CC:DD:EE:01,Sensor v2\n# comment\nSN-2,,\n\"SN-3\",\"aa-bb-cc-dd-ee-03\",\"M 3\"\nSN-4,AABBCCDDEE04\n";
        assert_eq!(
            parsed(text),
            [
                (
                    3,
                    "SN-1".into(),
                    Some("aa:bb:cc:dd:ee:01".into()),
                    Some("Sensor v2".into())
                ),
                (5, "SN-2".into(), None, None),
                (
                    6,
                    "SN-3".into(),
                    Some("aa:bb:cc:dd:ee:03".into()),
                    Some("M 3".into())
                ),
                (7, "SN-4".into(), Some("aa:bb:cc:dd:ee:04".into()), None),
            ]
        );
        // Without a header the first line is data.
        assert_eq!(parsed("SN-9\n").len(), 1);
    }

    #[test]
    fn every_bad_line_is_named_and_nothing_passes() {
        let text = "serial,mac,model\nSN-1\nbad serial\nSN-2,zz:bb:cc:dd:ee:ff\nSN-1\nSN-3,,x,extra\n,aa:bb:cc:dd:ee:ff\nSN-4,aab:bcc:dde:eff\n";
        let Err(Error::Invalid(msg)) = parse_allowlist_csv(text) else {
            panic!("must be refused")
        };
        for want in [
            "line 3: serial \"bad serial\"",
            "line 4: MAC \"zz:bb:cc:dd:ee:ff\"",
            "line 5: serial \"SN-1\" repeats line 2",
            "line 6: 4 fields",
            "line 7: the serial is empty",
            "line 8: MAC",
        ] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
        assert!(msg.starts_with("allow-list refused, nothing stored"));
        assert!(!msg.contains("line 2:"), "{msg}");
    }

    #[test]
    fn empty_oversized_and_long_reports() {
        assert!(matches!(
            parse_allowlist_csv("serial,mac\n\n"),
            Err(Error::Invalid(m)) if m.contains("no serials")
        ));
        let long_model = format!("SN-1,,{}", "m".repeat(MAX_MODEL_LEN + 1));
        assert!(parse_allowlist_csv(&long_model).is_err());
        let many_bad: String = (0..30).map(|i| format!("bad {i}\n")).collect();
        let Err(Error::Invalid(msg)) = parse_allowlist_csv(&many_bad) else {
            panic!("refused")
        };
        assert!(msg.ends_with("and 10 more bad lines"), "{msg}");
        let too_many: String = (0..=MAX_ALLOWLIST_ENTRIES)
            .map(|i| format!("S{i}\n"))
            .collect();
        assert!(matches!(
            parse_allowlist_csv(&too_many),
            Err(Error::Invalid(m)) if m.contains("at most")
        ));
    }
}
