//! The subscription tree: one node per topic level, `+` and `#` as ordinary child keys, and
//! shared-subscription groups kept beside plain subscribers at the node of their filter.
//!
//! Matching walks at most the topic's depth × the wildcard branches, independent of the
//! number of subscribers on other topics. Shared groups deliver each message to one member,
//! round-robin, preferring members that are connected.

use crate::codec::SubscriptionOptions;
use crate::topic::SplitFilter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the tree stores per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubEntry {
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<(String, SubEntry)>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    subs: HashMap<String, SubEntry>,
    shared: HashMap<String, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }
}

/// One subscriber a message goes to, with its subscriptions merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub client_id: String,
    /// Highest granted QoS among the matching subscriptions.
    pub qos: u8,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<u32>,
}

/// The subscription tree.
#[derive(Debug, Default)]
pub(crate) struct Router {
    root: Node,
    count: usize,
    /// Subscriptions per (filter, shared group): what this node's sessions want from other
    /// nodes of a cluster.
    interest: HashMap<Interest, usize>,
    /// Interests that gained their first subscription (true) or lost their last (false)
    /// since [`Router::take_interest_changes`] was last called, in order.
    interest_changes: Vec<(Interest, bool)>,
}

/// What a node's sessions subscribe to, as the cluster sees it: a filter, or a shared
/// subscription's group and filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Interest {
    /// The filter matched against topics.
    pub filter: String,
    /// The group of a `$share/{group}/{filter}` subscription.
    pub group: Option<String>,
}

impl Interest {
    fn of(f: SplitFilter<'_>) -> Self {
        Interest {
            filter: f.filter.to_owned(),
            group: f.group.map(str::to_owned),
        }
    }
}

impl Router {
    /// Adds or replaces a subscription; true if it did not exist.
    pub(crate) fn insert(&mut self, client_id: &str, f: SplitFilter<'_>, e: SubEntry) -> bool {
        let mut node = &mut self.root;
        for level in f.filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        let new = match f.group {
            None => node.subs.insert(client_id.to_owned(), e).is_none(),
            Some(g) => {
                let group = node.shared.entry(g.to_owned()).or_default();
                match group.members.iter_mut().find(|(c, _)| c == client_id) {
                    Some(m) => {
                        m.1 = e;
                        false
                    }
                    None => {
                        group.members.push((client_id.to_owned(), e));
                        true
                    }
                }
            }
        };
        if new {
            self.count += 1;
            let key = Interest::of(f);
            let n = self.interest.entry(key.clone()).or_default();
            *n += 1;
            if *n == 1 {
                self.interest_changes.push((key, true));
            }
        }
        new
    }

    /// The interests that gained their first or lost their last subscription, in order.
    pub(crate) fn take_interest_changes(&mut self) -> Vec<(Interest, bool)> {
        std::mem::take(&mut self.interest_changes)
    }

    /// Every interest with at least one subscription.
    pub(crate) fn interest(&self) -> Vec<Interest> {
        self.interest.keys().cloned().collect()
    }

    /// The member of shared group `group` on `filter` that gets a message on `topic` (the
    /// next one round-robin, preferring connected members), if the group has members here
    /// and the filter matches the topic.
    pub(crate) fn shared_target(
        &self,
        filter: &str,
        group: &str,
        topic: &str,
        online: &dyn Fn(&str) -> bool,
    ) -> Option<Target> {
        if !crate::topic::matches(filter, topic) {
            return None;
        }
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.children.get(level)?;
        }
        let g = node.shared.get(group)?;
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let start = g.next.fetch_add(1, Ordering::Relaxed);
        let pick = (0..n)
            .map(|i| &g.members[(start + i) % n])
            .find(|(c, _)| online(c))
            .unwrap_or(&g.members[start % n]);
        let mut out = HashMap::new();
        add(&mut out, None, &pick.0, &pick.1);
        out.into_values().next()
    }

    /// Removes a subscription; true if it existed.
    pub(crate) fn remove(&mut self, client_id: &str, f: SplitFilter<'_>) -> bool {
        let levels: Vec<&str> = f.filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, client_id, f.group);
        if removed {
            self.count -= 1;
            let key = Interest::of(f);
            if let Some(n) = self.interest.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.interest.remove(&key);
                    self.interest_changes.push((key, false));
                }
            }
        }
        removed
    }

    /// Number of subscriptions (shared members count once each).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Subscribers of `topic`. `publisher` enables no-local; `online` tells which shared
    /// group members are connected; `shared: false` leaves shared groups out (on a cluster
    /// node they get messages through [`Self::shared_target`], one member cluster-wide).
    pub(crate) fn targets(
        &self,
        topic: &str,
        publisher: Option<&str>,
        online: &dyn Fn(&str) -> bool,
        shared: bool,
    ) -> Vec<Target> {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut hits: Vec<&Node> = Vec::new();
        collect(&self.root, &levels, true, dollar, &mut hits);
        let mut out: HashMap<String, Target> = HashMap::new();
        for node in &hits {
            for (c, e) in &node.subs {
                add(&mut out, publisher, c, e);
            }
            for g in node.shared.values().filter(|_| shared) {
                let n = g.members.len();
                if n == 0 {
                    continue;
                }
                let start = g.next.fetch_add(1, Ordering::Relaxed);
                let pick = (0..n)
                    .map(|i| &g.members[(start + i) % n])
                    .find(|(c, _)| online(c))
                    .unwrap_or(&g.members[start % n]);
                add(&mut out, publisher, &pick.0, &pick.1);
            }
        }
        out.into_values().collect()
    }
}

fn add(out: &mut HashMap<String, Target>, publisher: Option<&str>, client: &str, e: &SubEntry) {
    if e.options.no_local && publisher == Some(client) {
        return;
    }
    let t = out.entry(client.to_owned()).or_insert_with(|| Target {
        client_id: client.to_owned(),
        qos: 0,
        retain_as_published: false,
        subscription_ids: Vec::new(),
    });
    t.qos = t.qos.max(e.options.qos);
    t.retain_as_published |= e.options.retain_as_published;
    if let Some(id) = e.id {
        t.subscription_ids.push(id);
    }
}

fn collect<'a>(
    node: &'a Node,
    levels: &[&str],
    first: bool,
    dollar: bool,
    hits: &mut Vec<&'a Node>,
) {
    let wild_ok = !(first && dollar);
    let Some((level, rest)) = levels.split_first() else {
        hits.push(node);
        if let Some(h) = node.children.get("#") {
            hits.push(h);
        }
        return;
    };
    if wild_ok {
        if let Some(h) = node.children.get("#") {
            hits.push(h);
        }
        if let Some(p) = node.children.get("+") {
            collect(p, rest, false, dollar, hits);
        }
    }
    if *level != "+"
        && *level != "#"
        && let Some(c) = node.children.get(*level)
    {
        collect(c, rest, false, dollar, hits);
    }
}

fn remove_at(node: &mut Node, levels: &[&str], client: &str, group: Option<&str>) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return match group {
            None => node.subs.remove(client).is_some(),
            Some(g) => {
                let Some(sg) = node.shared.get_mut(g) else {
                    return false;
                };
                let before = sg.members.len();
                sg.members.retain(|(c, _)| c != client);
                let removed = sg.members.len() != before;
                if sg.members.is_empty() {
                    node.shared.remove(g);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let removed = remove_at(child, rest, client, group);
    if child.is_empty() {
        node.children.remove(*level);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::parse_subscription;

    fn entry(qos: u8) -> SubEntry {
        SubEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            id: None,
        }
    }

    fn ids(r: &Router, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = r
            .targets(topic, None, &|_| true, true)
            .into_iter()
            .map(|t| t.client_id)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn interest_changes_on_the_first_and_last_subscription_of_a_filter() {
        let mut r = Router::default();
        let a = parse_subscription("a/#").expect("filter");
        let shared = parse_subscription("$share/g/a/#").expect("filter");
        let b = parse_subscription("b/+").expect("filter");
        r.insert("c1", a, entry(1));
        r.insert("c2", a, entry(1));
        r.insert("c3", shared, entry(1));
        r.insert("c1", a, entry(0)); // replaced, not new
        r.insert("c1", b, entry(0));
        let i = |f: &str, g: Option<&str>| Interest {
            filter: f.into(),
            group: g.map(str::to_owned),
        };
        assert_eq!(
            r.take_interest_changes(),
            vec![
                (i("a/#", None), true),
                (i("a/#", Some("g")), true),
                (i("b/+", None), true)
            ]
        );
        r.remove("c1", a);
        assert!(r.take_interest_changes().is_empty(), "c2 still wants a/#");
        r.remove("c2", a);
        r.remove("c3", shared);
        r.remove("c1", b);
        r.remove("c1", b); // absent: no change
        assert_eq!(
            r.take_interest_changes(),
            vec![
                (i("a/#", None), false),
                (i("a/#", Some("g")), false),
                (i("b/+", None), false)
            ]
        );
        assert!(r.interest().is_empty());
    }

    #[test]
    fn wildcards_and_dollar() {
        let mut r = Router::default();
        for (c, f) in [
            ("a", "x/+"),
            ("b", "x/#"),
            ("c", "#"),
            ("d", "$SYS/#"),
            ("e", "x/y"),
        ] {
            r.insert(c, parse_subscription(f).expect("valid"), entry(1));
        }
        assert_eq!(ids(&r, "x/y"), ["a", "b", "c", "e"]);
        assert_eq!(ids(&r, "x"), ["b", "c"]);
        assert_eq!(ids(&r, "$SYS/load"), ["d"]);
        assert!(r.remove("b", parse_subscription("x/#").expect("valid")));
        assert_eq!(ids(&r, "x/y"), ["a", "c", "e"]);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn shared_round_robin_prefers_online() {
        let mut r = Router::default();
        for c in ["m1", "m2", "m3"] {
            r.insert(
                c,
                parse_subscription("$share/g/t").expect("valid"),
                entry(0),
            );
        }
        let mut seen = Vec::new();
        for _ in 0..6 {
            let t = r.targets("t", None, &|_| true, true);
            assert_eq!(t.len(), 1);
            seen.push(t[0].client_id.clone());
        }
        assert_eq!(seen, ["m1", "m2", "m3", "m1", "m2", "m3"]);
        for _ in 0..3 {
            let t = r.targets("t", None, &|c| c == "m2", true);
            assert_eq!(t[0].client_id, "m2");
        }
    }

    #[test]
    fn overlapping_merge_and_no_local() {
        let mut r = Router::default();
        r.insert("a", parse_subscription("t/+").expect("valid"), entry(0));
        let mut e = entry(2);
        e.id = Some(7);
        r.insert("a", parse_subscription("t/#").expect("valid"), e);
        let t = r.targets("t/x", None, &|_| true, true);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].qos, 2);
        assert_eq!(t[0].subscription_ids, vec![7]);
        let mut nl = entry(1);
        nl.options.no_local = true;
        r.insert("b", parse_subscription("t/x").expect("valid"), nl);
        assert!(
            r.targets("t/x", Some("b"), &|_| true, true)
                .iter()
                .all(|t| t.client_id != "b")
        );
    }
}
