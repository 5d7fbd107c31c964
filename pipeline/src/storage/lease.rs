//! Leases: one process on a store runs each singleton worker (webhook delivery, exports),
//! and one segment run happens at a time, however many `serve` / `sinks run` processes
//! share the store.
//!
//! A lease is a versioned document under `_tidemark/leases/<name>/`, written the way every
//! config document is: each claim or renewal is the next numbered version, put with
//! `PutMode::Create`, so of two processes claiming at once exactly one wins. The holder
//! renews every third of the ttl; a lease whose expiry has passed (its holder died, or lost
//! the store) is taken over by the next claim; a released lease is free at once.
//!
//! The cases of a claim ([`claim`], pure, tested below):
//! - no lease yet, or released, or expired: take it (a new holding starts now);
//! - held by this process and not taken over since its last renewal: renew it;
//! - held by another process and not expired: busy, until its expiry.
//!
//! Expiry is the writer's wall-clock time, so nodes' clocks must agree within a fraction of
//! the ttl (NTP does). A holder that cannot renew stops its worker once two thirds of the
//! ttl have passed since its last renewal (its own monotonic clock), before anyone else may
//! take over; two holders overlap only if a process is frozen for longer than that.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::Store;
use super::docs::Docs;
use crate::Result;

/// One version of a lease document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    /// The holding process ([`this_process`]).
    pub holder: String,
    /// When the current holding started (Unix ms).
    pub since_ms: i64,
    /// Free after this (Unix ms); 0 once released.
    pub expires_ms: i64,
}

/// What a claim of a lease comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Write this as the next version (a new holding or a renewal).
    Take(LeaseDoc),
    /// Another process holds it until `until_ms`.
    Busy { holder: String, until_ms: i64 },
}

/// Decides a claim by `me` at `now_ms` given the newest version (`None`: never written).
pub fn claim(current: Option<&LeaseDoc>, me: &str, now_ms: i64, ttl: Duration) -> Claim {
    let expires_ms = now_ms.saturating_add(ttl.as_millis() as i64);
    match current {
        Some(d) if d.holder == me && d.expires_ms > 0 => Claim::Take(LeaseDoc {
            holder: me.to_string(),
            since_ms: d.since_ms,
            expires_ms,
        }),
        Some(d) if d.expires_ms > now_ms => Claim::Busy {
            holder: d.holder.clone(),
            until_ms: d.expires_ms,
        },
        _ => Claim::Take(LeaseDoc {
            holder: me.to_string(),
            since_ms: now_ms,
            expires_ms,
        }),
    }
}

/// This process as a lease holder: `host/pid/random`, unique per process start.
pub fn this_process() -> &'static str {
    static ID: LazyLock<String> = LazyLock::new(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}/{}/{}", std::process::id(), &random[..8])
    });
    &ID
}

/// A lease this process holds: the version it wrote last.
#[derive(Debug, Clone)]
pub struct Held {
    pub name: String,
    pub version: u64,
    pub doc: LeaseDoc,
    /// When that version was written (monotonic).
    pub renewed: Instant,
}

/// Claims, renews and releases leases on one store, as [`this_process`], with one ttl.
#[derive(Debug, Clone)]
pub struct Leases {
    docs: Docs,
    store: Store,
    holder: String,
    pub ttl: Duration,
}

/// The result of one attempt to take a lease.
#[derive(Debug)]
pub enum Taken {
    Held(Held),
    Busy { holder: String, until_ms: i64 },
}

impl Leases {
    pub fn new(store: &Store, ttl: Duration) -> Leases {
        Leases::as_holder(store, ttl, this_process())
    }

    /// Leases claimed as `holder` (tests use two holders in one process).
    pub fn as_holder(store: &Store, ttl: Duration, holder: &str) -> Leases {
        Leases {
            docs: store.docs(),
            store: store.clone(),
            holder: holder.to_string(),
            ttl,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn dir(&self, name: &str) -> Path {
        self.store.paths().lease(name)
    }

    /// The newest version of lease `name`.
    pub async fn current(&self, name: &str) -> Result<Option<(u64, LeaseDoc)>> {
        self.docs.latest_in(&self.dir(name)).await
    }

    /// One attempt to take (or renew) lease `name`.
    pub async fn try_take(&self, name: &str) -> Result<Taken> {
        let dir = self.dir(name);
        loop {
            let current = self.current(name).await?;
            let now = chrono::Utc::now().timestamp_millis();
            match claim(
                current.as_ref().map(|(_, d)| d),
                &self.holder,
                now,
                self.ttl,
            ) {
                Claim::Busy { holder, until_ms } => return Ok(Taken::Busy { holder, until_ms }),
                Claim::Take(doc) => {
                    let version = current.map_or(1, |(v, _)| v + 1);
                    if self.docs.create_version(&dir, version, &doc).await? {
                        return Ok(Taken::Held(Held {
                            name: name.to_string(),
                            version,
                            doc,
                            renewed: Instant::now(),
                        }));
                    }
                    // Another claim won this version: decide again on what it wrote.
                }
            }
        }
    }

    /// Renews `held`. `Ok(false)`: it was taken over (someone wrote a version after ours).
    pub async fn renew(&self, held: &mut Held) -> Result<bool> {
        match self.current(&held.name).await? {
            Some((v, _)) if v == held.version => {}
            _ => return Ok(false),
        }
        match self.try_take(&held.name).await? {
            Taken::Held(h) if h.version == held.version + 1 => {
                *held = h;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Frees `held` at once (unless it was taken over meanwhile).
    pub async fn release(&self, held: Held) -> Result<()> {
        if let Some((v, _)) = self.current(&held.name).await?
            && v == held.version
        {
            let doc = LeaseDoc {
                expires_ms: 0,
                ..held.doc
            };
            self.docs
                .create_version(&self.dir(&held.name), v + 1, &doc)
                .await?;
        }
        Ok(())
    }

    /// How often the holder renews: a third of the ttl.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A holder whose last renewal is this old stops its worker (two thirds of the ttl).
    pub fn give_up_after(&self) -> Duration {
        self.ttl * 2 / 3
    }

    /// Waits until lease `name` is taken, polling every `poll` (`None`: `stop` turned true
    /// first). Says once which process it waits for.
    pub async fn acquire(
        &self,
        name: &str,
        poll: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Held> {
        self.acquire_logged(name, poll, stop, tracing::Level::INFO)
            .await
    }

    /// [`Leases::acquire`], saying what happens at `level`.
    async fn acquire_logged(
        &self,
        name: &str,
        poll: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        level: tracing::Level,
    ) -> Option<Held> {
        let mut waiting_for = None::<String>;
        loop {
            if *stop.borrow() {
                return None;
            }
            match self.try_take(name).await {
                Ok(Taken::Held(h)) => {
                    if level == tracing::Level::INFO {
                        tracing::info!(lease = name, holder = %self.holder, "lease taken");
                    } else {
                        tracing::debug!(lease = name, holder = %self.holder, "lease taken");
                    }
                    return Some(h);
                }
                Ok(Taken::Busy { holder, .. }) => {
                    if waiting_for.as_deref() != Some(holder.as_str()) {
                        if level == tracing::Level::INFO {
                            tracing::info!(lease = name, %holder, "another process holds the lease; waiting");
                        } else {
                            tracing::debug!(lease = name, %holder, "another process holds the lease; waiting");
                        }
                        waiting_for = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(lease = name, error = %e, "cannot claim the lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Runs `work` while holding lease `name`, waiting for it first (polling every
    /// `poll`) and renewing it meanwhile; releases it afterwards. For short exclusive runs
    /// (a segment evaluation); `work` is not interrupted if the lease is lost.
    pub async fn exclusive<T>(
        &self,
        name: &str,
        poll: Duration,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        // Each run claims as a holder of its own: two runs in one process (serve's pass
        // and the job loop's) must exclude each other too, and a claim by the same holder
        // would count as a renewal.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let this = Leases {
            holder: format!("{}/run-{run}", self.holder),
            ..self.clone()
        };
        let (_never, mut stop) = tokio::sync::watch::channel(false);
        // Runs are short and frequent: their turns are logged at debug only.
        let acquired = this
            .acquire_logged(name, poll, &mut stop, tracing::Level::DEBUG)
            .await;
        let Some(mut held) = acquired else {
            unreachable!("the stop signal of an exclusive run never turns true")
        };
        // Renewed from a task of its own: `work` may hold its thread for a while (a
        // DataFusion plan), and a renewal that waited for it could let the lease expire.
        let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
        let renewer = {
            let leases = this.clone();
            let mut held = held.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(leases.renew_every()) => {
                            if !matches!(leases.renew(&mut held).await, Ok(true)) {
                                tracing::warn!(lease = %name, "lease lost during an exclusive run");
                            }
                        }
                        _ = done_rx.changed() => return held,
                    }
                }
            })
        };
        let out = work.await;
        let _ = done_tx.send(true);
        if let Ok(renewed) = renewer.await {
            held = renewed;
        }
        if let Err(e) = this.release(held).await {
            tracing::warn!(lease = name, error = %e, "cannot release the lease; it expires");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn doc(holder: &str, since_ms: i64, expires_ms: i64) -> LeaseDoc {
        LeaseDoc {
            holder: holder.into(),
            since_ms,
            expires_ms,
        }
    }

    #[test]
    fn claim_cases() {
        let cases: Vec<(&str, Option<LeaseDoc>, Claim)> = vec![
            ("never written", None, Claim::Take(doc("me", 1_000, 11_000))),
            (
                "renewal keeps since",
                Some(doc("me", 500, 5_000)),
                Claim::Take(doc("me", 500, 11_000)),
            ),
            (
                "held by another",
                Some(doc("other", 500, 1_001)),
                Claim::Busy {
                    holder: "other".into(),
                    until_ms: 1_001,
                },
            ),
            (
                "expired at now",
                Some(doc("other", 500, 1_000)),
                Claim::Take(doc("me", 1_000, 11_000)),
            ),
            (
                "released by another",
                Some(doc("other", 500, 0)),
                Claim::Take(doc("me", 1_000, 11_000)),
            ),
            (
                "released by me starts a new holding",
                Some(doc("me", 500, 0)),
                Claim::Take(doc("me", 1_000, 11_000)),
            ),
        ];
        for (name, current, want) in cases {
            assert_eq!(claim(current.as_ref(), "me", 1_000, TTL), want, "{name}");
        }
    }

    /// A store of its own (memory stores of one name are shared within the process).
    fn store() -> Store {
        let name = uuid::Uuid::new_v4().simple().to_string();
        Store::open(&format!("memory:///{name}"), &Default::default()).unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_renewal_takeover_and_release() {
        let s = store();
        let a = Leases::as_holder(&s, TTL, "a");
        let b = Leases::as_holder(&s, TTL, "b");
        let Taken::Held(mut ha) = a.try_take("w").await.unwrap() else {
            panic!("a takes a free lease")
        };
        match b.try_take("w").await.unwrap() {
            Taken::Busy { holder, until_ms } => {
                assert_eq!(holder, "a");
                assert_eq!(until_ms, ha.doc.expires_ms);
            }
            Taken::Held(_) => panic!("b must not take a held lease"),
        }
        assert!(a.renew(&mut ha).await.unwrap());
        assert_eq!(ha.version, 2);

        // a's holding expires (its process died): b takes over, and a's renewal fails.
        let short = Leases::as_holder(&s, Duration::from_millis(1), "a");
        let Taken::Held(_) = short.try_take("w").await.unwrap() else {
            panic!("a renews")
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Taken::Held(hb) = b.try_take("w").await.unwrap() else {
            panic!("b takes an expired lease")
        };
        assert_eq!(hb.doc.holder, "b");
        assert!(!a.renew(&mut ha).await.unwrap(), "a was taken over");

        // Released: free at once; a release of a lease taken over does nothing.
        a.release(ha).await.unwrap();
        assert_eq!(s_current(&b).await.holder, "b");
        b.release(hb).await.unwrap();
        assert_eq!(s_current(&b).await.expires_ms, 0);
        let Taken::Held(h) = a.try_take("w").await.unwrap() else {
            panic!("a takes a released lease")
        };
        assert_eq!(h.doc.holder, "a");
    }

    async fn s_current(l: &Leases) -> LeaseDoc {
        l.current("w").await.unwrap().unwrap().1
    }

    #[tokio::test]
    async fn racing_claims_have_one_winner() {
        let s = store();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let l = Leases::as_holder(&s, TTL, &format!("p{i}"));
                tokio::spawn(
                    async move { matches!(l.try_take("w").await.unwrap(), Taken::Held(_)) },
                )
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += t.await.unwrap() as usize;
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn exclusive_runs_do_not_overlap() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let s = store();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                // Two holders, each running two at a time: runs of one process exclude
                // each other as well.
                let l = Leases::as_holder(&s, TTL, &format!("p{}", i % 2));
                let (inside, most) = (inside.clone(), most.clone());
                tokio::spawn(async move {
                    l.exclusive("run", Duration::from_millis(5), async {
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Ok(i)
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        assert_eq!(done, vec![0, 1, 2, 3]);
        assert_eq!(most.load(Ordering::SeqCst), 1, "two runs overlapped");
    }
}
