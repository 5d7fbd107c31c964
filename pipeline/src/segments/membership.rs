//! Segment membership, decided without I/O: who entered, who exited and who stayed, from
//! the members after the last run and the users each segment matches now.
//!
//! Cases:
//! - a matching user who was not a member enters (entered_at = the run's time);
//! - a member who no longer matches exits;
//! - a member who still matches stays, keeping the entered_at of the run they entered;
//! - a user who exited and matches again re-enters with the new run's time;
//! - members of a segment that is gone (deleted or invalid) are dropped without changes.

use std::collections::{BTreeMap, BTreeSet};

/// Members of an environment: segment id -> user id -> entered_at (µs).
pub type Members = BTreeMap<String, BTreeMap<String, i64>>;

/// One user entering or leaving one segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub segment_id: String,
    pub user_id: String,
    pub entered: bool,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// Sorted by segment, user, then exits before entries.
    pub changes: Vec<Change>,
    /// The members after the run.
    pub next: Members,
    /// Some segment's members were dropped without changes.
    pub dropped: bool,
}

impl Diff {
    /// (entered, exited).
    pub fn counts(&self) -> (usize, usize) {
        let entered = self.changes.iter().filter(|c| c.entered).count();
        (entered, self.changes.len() - entered)
    }

    /// Whether the members table must be rewritten.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty() || self.dropped
    }
}

/// The diff between `old` members and the users each evaluated segment matches `now`
/// (segments missing from `now` are gone), for a run at `at`.
pub fn diff(old: &Members, now: BTreeMap<String, BTreeSet<String>>, at: i64) -> Diff {
    let empty = BTreeMap::new();
    let mut out = Diff::default();
    for (segment, matching) in now {
        let was = old.get(&segment).unwrap_or(&empty);
        for user in matching.iter().filter(|u| !was.contains_key(*u)) {
            out.changes.push(Change {
                segment_id: segment.clone(),
                user_id: user.clone(),
                entered: true,
            });
        }
        for user in was.keys().filter(|u| !matching.contains(*u)) {
            out.changes.push(Change {
                segment_id: segment.clone(),
                user_id: user.clone(),
                entered: false,
            });
        }
        let kept = matching
            .into_iter()
            .map(|u| {
                let entered_at = was.get(&u).copied().unwrap_or(at);
                (u, entered_at)
            })
            .collect();
        out.next.insert(segment, kept);
    }
    out.dropped = old.keys().any(|s| !out.next.contains_key(s));
    out.changes.sort();
    out
}

/// Applies committed `changes` of a run at `at` to `members` (repairing a run that
/// crashed after committing its changes).
pub fn apply(members: &mut Members, changes: &[Change], at: i64) {
    for c in changes {
        let seg = members.entry(c.segment_id.clone()).or_default();
        if c.entered {
            seg.entry(c.user_id.clone()).or_insert(at);
        } else {
            seg.remove(&c.user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[(&str, i64)])]) -> Members {
        list.iter()
            .map(|(s, users)| {
                let users = users.iter().map(|(u, at)| (u.to_string(), *at)).collect();
                (s.to_string(), users)
            })
            .collect()
    }

    fn matching(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|(s, users)| (s.to_string(), users.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    fn change(s: &str, u: &str, entered: bool) -> Change {
        Change {
            segment_id: s.into(),
            user_id: u.into(),
            entered,
        }
    }

    #[test]
    fn enter_exit_and_stay() {
        let old = members(&[("gold", &[("a", 10), ("b", 10)])]);
        let d = diff(&old, matching(&[("gold", &["b", "c"])]), 20);
        assert_eq!(
            d.changes,
            vec![change("gold", "a", false), change("gold", "c", true)]
        );
        assert_eq!(
            d.next,
            members(&[("gold", &[("b", 10), ("c", 20)])]),
            "b keeps 10"
        );
        assert_eq!(d.counts(), (1, 1));
        assert!(!d.dropped && d.changed());
    }

    #[test]
    fn nothing_changes_when_the_same_users_match() {
        let old = members(&[("gold", &[("a", 10)])]);
        let d = diff(&old, matching(&[("gold", &["a"])]), 20);
        assert_eq!((d.changes.len(), d.changed()), (0, false));
        assert_eq!(d.next, old);
    }

    #[test]
    fn a_rejoin_enters_again_with_the_new_time() {
        let first = diff(&Members::new(), matching(&[("gold", &["a"])]), 10);
        let left = diff(&first.next, matching(&[("gold", &[])]), 20);
        assert_eq!(left.changes, vec![change("gold", "a", false)]);
        let back = diff(&left.next, matching(&[("gold", &["a"])]), 30);
        assert_eq!(back.changes, vec![change("gold", "a", true)]);
        assert_eq!(back.next, members(&[("gold", &[("a", 30)])]));
    }

    #[test]
    fn members_of_gone_segments_are_dropped_without_changes() {
        let old = members(&[("gold", &[("a", 10)]), ("old", &[("a", 10)])]);
        let d = diff(&old, matching(&[("gold", &["a"])]), 20);
        assert!(d.changes.is_empty());
        assert!(d.dropped && d.changed());
        assert_eq!(d.next, members(&[("gold", &[("a", 10)])]));
    }

    #[test]
    fn applying_a_runs_changes_gives_its_members() {
        let old = members(&[("gold", &[("a", 10), ("b", 10)])]);
        let d = diff(&old, matching(&[("gold", &["b", "c"])]), 20);
        let mut repaired = old.clone();
        apply(&mut repaired, &d.changes, 20);
        assert_eq!(repaired, d.next);
    }
}
