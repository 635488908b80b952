//! MQTT topics and filters as NATS subjects. NATS subjects are dot-separated tokens that
//! may not be empty or contain `.`, `*`, `>` or whitespace; MQTT levels may be any UTF-8,
//! empty included. Each level becomes one token: bytes `A-Z a-z 0-9 - _` as they are, any
//! other byte as `~` and two upper-case hex digits, an empty level as a lone `~`. So the
//! mapping is one-to-one, and `+` and `#` map to `*` and `>`:
//!
//! ```text
//!   devices/d-1/temp      → {prefix}.m.devices.d-1.temp
//!   a.b/ /x*              → {prefix}.m.a~2Eb.~20.x~2A
//!   $SYS/x, a//b          → {prefix}.m.~24SYS.x, {prefix}.m.a.~.b
//!   devices/+/temp        → {prefix}.m.devices.*.temp
//!   devices/#             → {prefix}.m.devices.> and {prefix}.m.devices (MQTT's `#` also
//!                           matches its parent level; NATS's `>` does not)
//! ```
//!
//! NATS matching is then a superset of MQTT's (`*` and `>` also match `$` topics, which MQTT
//! wildcards at the first level do not): the receiving node's own router decides.

/// The subject a message on `topic` is published on.
pub(crate) fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 3 + topic.len() + 8);
    s.push_str(prefix);
    s.push_str(".m");
    for level in topic.split('/') {
        s.push('.');
        escape(level, &mut s);
    }
    s
}

/// The subjects a node subscribes to for the MQTT filter `filter` (not `$share/`-prefixed).
pub(crate) fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut s = String::with_capacity(prefix.len() + 3 + filter.len() + 8);
    s.push_str(prefix);
    s.push_str(".m");
    for level in filter.split('/') {
        if level == "#" {
            // `a/#` matches `a` too; `#` alone matches every topic, all of which have a level.
            let parent = (s.len() > prefix.len() + 2).then(|| s.clone());
            s.push_str(".>");
            return std::iter::once(s).chain(parent).collect();
        }
        s.push('.');
        if level == "+" {
            s.push('*');
        } else {
            escape(level, &mut s);
        }
    }
    vec![s]
}

/// The NATS queue group of the MQTT shared group `group` (escaped like a level).
pub(crate) fn queue_name(group: &str) -> String {
    let mut q = String::from("share-");
    escape(group, &mut q);
    q
}

fn escape(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('~');
        return;
    }
    for b in level.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_level_by_level_and_escape_what_nats_reserves() {
        assert_eq!(
            topic_subject("moat", "devices/d-1/t_x"),
            "moat.m.devices.d-1.t_x"
        );
        assert_eq!(
            topic_subject("moat", "a.b/ /x*/y>"),
            "moat.m.a~2Eb.~20.x~2A.y~3E"
        );
        assert_eq!(topic_subject("moat", "$SYS/x"), "moat.m.~24SYS.x");
        assert_eq!(topic_subject("moat", "a//b/"), "moat.m.a.~.b.~");
        assert_eq!(topic_subject("moat", "/"), "moat.m.~.~");
        assert_eq!(topic_subject("moat", "~/é"), "moat.m.~7E.~C3~A9");
        assert_eq!(topic_subject("moat", "tab\there"), "moat.m.tab~09here");
    }

    #[test]
    fn distinct_topics_never_share_a_subject() {
        let topics = [
            "a/b", "a.b", "a/~2Eb", "a~/b", "a//b", "a/~/b", "a/", "a", "~",
        ];
        let mut subjects: Vec<String> = topics.iter().map(|t| topic_subject("p", t)).collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), topics.len(), "{subjects:?}");
    }

    #[test]
    fn filters_map_wildcards_and_hash_covers_its_parent() {
        assert_eq!(
            filter_subjects("moat", "devices/+/t"),
            ["moat.m.devices.*.t"]
        );
        assert_eq!(
            filter_subjects("moat", "devices/#"),
            ["moat.m.devices.>", "moat.m.devices"]
        );
        assert_eq!(filter_subjects("moat", "#"), ["moat.m.>"]);
        assert_eq!(filter_subjects("moat", "+"), ["moat.m.*"]);
        assert_eq!(filter_subjects("moat", "a b/c"), ["moat.m.a~20b.c"]);
        assert_eq!(filter_subjects("moat", "+/#"), ["moat.m.*.>", "moat.m.*"]);
    }
}
