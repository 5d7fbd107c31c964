//! The dedup index: which `(environment, event_id)` pairs were accepted within the dedup
//! window. Keys are 128-bit hashes; the index is rebuilt at startup from the WAL and the
//! `events` table, so it survives restarts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_128;

/// The keys are already uniform hashes: use their low bits as the table hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Map = HashMap<u128, u32, BuildHasherDefault<PassThrough>>;

/// High bit of the stored second: the key's batch is not durable yet.
const PENDING: u32 = 1 << 31;

/// What the index knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: store it.
    New,
    /// Stored within the window: a retry, drop it.
    Stored,
    /// Being stored by a concurrent request right now.
    InFlight,
}

/// The events of a batch that carry an id (their positions) and those ids' keys.
pub fn keys_of(environment: &str, events: &[super::event::Event<'_>]) -> (Vec<usize>, Vec<u128>) {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.event_id.as_ref().map(|id| (i, key(environment, id))))
        .unzip()
}

/// What a batch keeps after the index answered for its event ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Per event of the batch: store it (events without an id are always kept).
    pub keep: Vec<bool>,
    /// The keys this request now holds in flight (to confirm or forget).
    pub fresh: Vec<u128>,
    /// Some id is being stored by a concurrent request: refuse the batch (503) so the
    /// client retries, instead of acknowledging what is not stored yet.
    pub in_flight: bool,
}

/// Decides which of `events` events are stored: `positions` are the events that carry
/// an id, `keys` their keys and `seen` the index's answer for each.
pub fn verdict(events: usize, positions: &[usize], keys: &[u128], seen: &[Seen]) -> Verdict {
    let mut out = Verdict {
        keep: vec![true; events],
        fresh: Vec::with_capacity(keys.len()),
        in_flight: false,
    };
    for ((pos, key), s) in positions.iter().zip(keys).zip(seen) {
        match s {
            Seen::New => out.fresh.push(*key),
            Seen::Stored => out.keep[*pos] = false,
            Seen::InFlight => {
                out.keep[*pos] = false;
                out.in_flight = true;
            }
        }
    }
    out
}

/// The dedup key of an event id in an environment.
pub fn key(environment: &str, event_id: &str) -> u128 {
    let mut buf = Vec::with_capacity(environment.len() + event_id.len() + 1);
    buf.extend_from_slice(environment.as_bytes());
    buf.push(0xff); // never part of UTF-8, so ("a","bc") != ("ab","c")
    buf.extend_from_slice(event_id.as_bytes());
    xxh3_128(&buf)
}

pub struct Dedup {
    window_s: u32,
    max_entries: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// key -> second (since the epoch) it was accepted.
    seen: Map,
    last_sweep: u32,
}

impl Dedup {
    pub fn new(window: Duration, max_entries: usize) -> Dedup {
        Dedup {
            window_s: window.as_secs().min(u64::from(u32::MAX)) as u32,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                seen: Map::default(),
                last_sweep: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Classifies each key. New keys are remembered as in flight until [`Dedup::confirm`]
    /// (or [`Dedup::forget`] when their batch could not be stored).
    pub fn check_and_insert(&self, keys: &[u128], now_s: u32) -> Vec<Seen> {
        let mut inner = self.lock();
        let window = self.window_s;
        let now_s = now_s & !PENDING;
        let mut mine = std::collections::HashSet::new();
        let fresh: Vec<Seen> = keys
            .iter()
            .map(|k| match inner.seen.get(k) {
                // Repeated within this very batch: a duplicate, not a concurrent request.
                Some(_) if mine.contains(k) => Seen::Stored,
                Some(at) if now_s.saturating_sub(*at & !PENDING) <= window => {
                    if *at & PENDING != 0 {
                        Seen::InFlight
                    } else {
                        Seen::Stored
                    }
                }
                _ => {
                    inner.seen.insert(*k, now_s | PENDING);
                    mine.insert(*k);
                    Seen::New
                }
            })
            .collect();
        if inner.seen.len() > self.max_entries || now_s.saturating_sub(inner.last_sweep) >= 60 {
            self.sweep(&mut inner, now_s);
        }
        fresh
    }

    /// Marks keys as stored (their batch is durable).
    pub fn confirm(&self, keys: &[u128]) {
        let mut inner = self.lock();
        for k in keys {
            if let Some(at) = inner.seen.get_mut(k) {
                *at &= !PENDING;
            }
        }
    }

    /// Forgets keys whose batch could not be made durable.
    pub fn forget(&self, keys: &[u128]) {
        let mut inner = self.lock();
        for k in keys {
            inner.seen.remove(k);
        }
    }

    /// Remembers a key accepted at `at_s` (recovery).
    pub fn remember(&self, key: u128, at_s: u32) {
        let mut inner = self.lock();
        let at_s = at_s & !PENDING;
        let e = inner.seen.entry(key).or_insert(at_s);
        *e = (*e & !PENDING).max(at_s);
    }

    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired keys; beyond `max_entries`, drops the oldest half of the window too.
    fn sweep(&self, inner: &mut Inner, now_s: u32) {
        inner.last_sweep = now_s;
        let mut horizon = now_s.saturating_sub(self.window_s);
        inner.seen.retain(|_, at| *at & !PENDING >= horizon);
        while inner.seen.len() > self.max_entries && horizon < now_s {
            horizon += (now_s - horizon).div_ceil(2);
            inner.seen.retain(|_, at| *at & !PENDING >= horizon);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_drop_stored_ids_and_refuse_in_flight_ones() {
        // Events 0 and 2 carry ids; event 1 has none and is always kept.
        let v = verdict(3, &[0, 2], &[7, 9], &[Seen::Stored, Seen::New]);
        assert_eq!(v.keep, vec![false, true, true]);
        assert_eq!((v.fresh, v.in_flight), (vec![9], false));
        let v = verdict(2, &[0, 1], &[7, 9], &[Seen::New, Seen::InFlight]);
        assert_eq!((v.fresh, v.in_flight), (vec![7], true));
    }

    #[test]
    fn repeats_within_the_window_are_duplicates() {
        let d = Dedup::new(Duration::from_secs(3600), 1000);
        let a = key("default", "a");
        let b = key("default", "b");
        assert_eq!(
            d.check_and_insert(&[a, b, a], 100),
            vec![Seen::New, Seen::New, Seen::Stored]
        );
        assert_eq!(d.check_and_insert(&[a], 101), vec![Seen::InFlight]);
        d.confirm(&[a, b]);
        assert_eq!(d.check_and_insert(&[a], 100 + 3600), vec![Seen::Stored]);
        assert_eq!(d.check_and_insert(&[b], 100 + 3601), vec![Seen::New]);
    }

    #[test]
    fn environments_do_not_collide() {
        assert_ne!(key("a", "bc"), key("ab", "c"));
        assert_ne!(key("prod", "x"), key("staging", "x"));
    }

    #[test]
    fn forgotten_keys_are_new_again() {
        let d = Dedup::new(Duration::from_secs(60), 1000);
        let a = key("e", "a");
        assert_eq!(d.check_and_insert(&[a], 1), vec![Seen::New]);
        d.forget(&[a]);
        assert_eq!(d.check_and_insert(&[a], 2), vec![Seen::New]);
    }

    #[test]
    fn the_index_stays_bounded() {
        let d = Dedup::new(Duration::from_secs(3600), 100);
        for t in 0..10u32 {
            let keys: Vec<u128> = (0..50u32).map(|i| key("e", &format!("{t}-{i}"))).collect();
            d.check_and_insert(&keys, 1000 + t * 10);
            d.confirm(&keys);
        }
        assert!(d.len() <= 100, "{}", d.len());
        // The newest keys are still remembered.
        assert_eq!(
            d.check_and_insert(&[key("e", "9-0")], 1095),
            vec![Seen::Stored]
        );
    }
}
