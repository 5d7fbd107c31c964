//! Change ids: the ops of one update (a PUT, one item of a batch, one CSV row) share a
//! `change_id` of 16 hex digits of the write's time in microseconds (strictly increasing
//! within a process) and 16 of a random node and sequence part, so text order is write
//! order and ids never repeat. A field's declaration records the floor of its time, so
//! changes written to an earlier declaration of the same name stay hidden.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// The smallest change id at time `t`: changes before a field's declaration sort below it.
pub fn change_id_floor(t: DateTime<Utc>) -> String {
    format!("{:016x}{:016x}", t.timestamp_micros().max(0), 0)
}

/// Strictly increasing microseconds within this process.
fn next_micros() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// A change id and its time.
pub fn next_change_id() -> (String, i64) {
    static NODE: LazyLock<u32> = LazyLock::new(rand::random);
    let us = next_micros();
    (
        format!("{us:016x}{:08x}{:08x}", *NODE, rand::random::<u32>()),
        us,
    )
}
