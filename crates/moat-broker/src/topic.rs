//! Topic names and filters: validation, matching, shared-subscription parsing and ACL
//! coverage ([`filter_covers`]).
//!
//! Rules (MQTT 3.1.1 §4.7, 5.0 §4.7): levels are separated by `/`; `+` matches exactly one
//! level, `#` matches any number of levels including the parent and must be last; both must
//! fill a whole level. Filters starting with a wildcard do not match topics starting with `$`.

/// Why a topic name or filter is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic or filter.
    #[error("empty topic")]
    Empty,
    /// A wildcard in a topic name, or a misplaced wildcard in a filter.
    #[error("misplaced wildcard")]
    Wildcard,
    /// A `$share/…` filter without a valid group name or inner filter.
    #[error("bad shared subscription")]
    Shared,
}

/// Checks a topic name (PUBLISH): non-empty, no wildcards.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Checks a (non-shared) topic filter.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err(TopicError::Wildcard),
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return Err(TopicError::Wildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A subscription filter split into its share group (if any) and the filter proper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitFilter<'a> {
    /// `Some(group)` for `$share/group/filter`.
    pub group: Option<&'a str>,
    /// The filter that topics are matched against.
    pub filter: &'a str,
}

/// Splits and validates a subscription filter, shared or not.
pub fn parse_subscription(filter: &str) -> Result<SplitFilter<'_>, TopicError> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        let (group, inner) = rest.split_once('/').ok_or(TopicError::Shared)?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::Shared);
        }
        validate_filter(inner)?;
        return Ok(SplitFilter {
            group: Some(group),
            filter: inner,
        });
    }
    validate_filter(filter)?;
    Ok(SplitFilter {
        group: None,
        filter,
    })
}

/// True when `filter` matches `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when ACL filter `acl` matches every topic that subscription filter `filter` can
/// match, so granting `filter` grants nothing `acl` does not.
pub fn filter_covers(acl: &str, filter: &str) -> bool {
    let a: Vec<&str> = acl.split('/').collect();
    let f: Vec<&str> = filter.split('/').collect();
    // A wildcard in the ACL's first level does not match `$` topics; a filter whose first
    // level is a literal `$…` can only match such topics.
    if matches!(a.first(), Some(&"+") | Some(&"#")) && f.first().is_some_and(|l| l.starts_with('$'))
    {
        return false;
    }
    covers(&a, &f)
}

fn covers(a: &[&str], f: &[&str]) -> bool {
    match (a.split_first(), f.split_first()) {
        (Some((&"#", _)), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((_, _)), Some((&"#", _))) => false,
        (Some((&"+", ar)), Some((_, fr))) => covers(ar, fr),
        (Some((_, _)), Some((&"+", _))) => false,
        (Some((al, ar)), Some((fl, fr))) => al == fl && covers(ar, fr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "a/b", true),
            ("+", "/a", false),
            ("+/a", "/a", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn coverage() {
        let cases = [
            ("devices/d1/#", "devices/d1/#", true),
            ("devices/d1/#", "devices/d1", true),
            ("devices/d1/#", "devices/d1/+/x", true),
            ("devices/d1/#", "devices/+/x", false),
            ("devices/d1/#", "devices/#", false),
            ("devices/d1/#", "#", false),
            ("devices/+/telemetry", "devices/d7/telemetry", true),
            ("devices/+/telemetry", "devices/+/telemetry", true),
            ("devices/+/telemetry", "devices/#", false),
            ("devices/+/telemetry", "devices/+/+", false),
            ("devices/+/telemetry", "devices/d1/telemetry/x", false),
            ("devices/+", "devices/+/x", false),
            ("#", "anything/+/#", true),
            ("#", "$SYS/x", false),
            ("+/#", "$SYS/#", false),
            ("$SYS/#", "$SYS/x/+", true),
            ("a/b", "a/b", true),
            ("a/b", "a/+", false),
            ("a/+/#", "a/x", true),
            ("a/+/#", "a", false),
            ("a/+", "a/", true),
        ];
        for (a, f, want) in cases {
            assert_eq!(filter_covers(a, f), want, "{a} covers {f}");
        }
    }

    #[test]
    fn coverage_is_sound_on_samples() {
        // Whenever coverage is claimed, every sample topic the filter matches, the ACL
        // matches too.
        let filters = [
            "a/#", "a/+", "a/+/c", "+/b", "#", "+", "a", "a/b/c", "+/+/#", "$x/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "x/b", "a/", "/", "$x/y", "a/b/c/d", "b",
        ];
        for acl in filters {
            for f in filters {
                if filter_covers(acl, f) {
                    for t in topics {
                        assert!(
                            !matches(f, t) || matches(acl, t),
                            "{acl} ⊇ {f} fails on {t}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn filters_and_shares() {
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a+").is_err());
        assert!(validate_filter("").is_err());
        let s = parse_subscription("$share/g1/a/+").expect("valid");
        assert_eq!(s.group, Some("g1"));
        assert_eq!(s.filter, "a/+");
        assert!(parse_subscription("$share/g1").is_err());
        assert!(parse_subscription("$share//a").is_err());
        assert!(parse_subscription("$share/g+/a").is_err());
        assert!(validate_name("a/+").is_err());
    }
}
