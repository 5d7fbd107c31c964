//! Background tasks under one supervisor: each is started with a name, all share one stop
//! signal, and [`Supervisor::shutdown`] stops them and waits for each in the order they
//! were started (a task that does not stop within the grace period is named in a warning
//! and left to end with the process).
//!
//! The shapes a task takes:
//! - [`Supervisor::every`]: a pass every interval until stop (key refresh, compaction,
//!   retention, segments);
//! - [`Supervisor::restarting`]: a long-running worker that is restarted a second after
//!   it fails (webhooks, exports);
//! - [`Supervisor::spawn`]: a task that watches the stop signal itself (the job loop).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Result;
use crate::storage::lease::{Held, Leases};

pub struct Supervisor {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// How long a failed worker waits before it is started again (1 s).
    pub restart_after: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let (stop_tx, stop_rx) = watch::channel(false);
        Supervisor {
            stop_tx,
            stop_rx,
            tasks: Vec::new(),
            restart_after: Duration::from_secs(1),
        }
    }

    /// The stop signal: turns true once [`Supervisor::stop`] is called.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    /// Tells every task to stop (without waiting for them).
    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// Names of the tasks started, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(n, _)| *n).collect()
    }

    /// Runs `task`, which ends by itself once the stop signal turns true.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Runs `pass` every `interval` (the first after one interval) until stop; a pass in
    /// progress finishes first. A zero interval means the task is off.
    pub fn every<F, Fut>(&mut self, name: &'static str, interval: Duration, pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.every_or_woken(name, interval, Arc::new(Notify::new()), pass);
    }

    /// [`Supervisor::every`], and also as soon as `wake` is notified (a notification
    /// during a pass runs one more pass right after it; the interval restarts after each).
    pub fn every_or_woken<F, Fut>(
        &mut self,
        name: &'static str,
        interval: Duration,
        wake: Arc<Notify>,
        mut pass: F,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if interval.is_zero() {
            return;
        }
        let mut stop = self.stop_signal();
        self.spawn(name, async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = wake.notified() => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                pass().await;
            }
        });
    }

    /// Runs the worker `run(stop)` until it returns `Ok` (it stopped) or fails after the
    /// stop signal; any other failure is logged and the worker started again.
    pub fn restarting<F, Fut>(&mut self, name: &'static str, mut run: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        let stop = self.stop_signal();
        let restart_after = self.restart_after;
        self.spawn(name, async move {
            keep_running(name, &mut run, stop, restart_after).await;
        });
    }

    /// [`Supervisor::restarting`] on the one process of the store that holds lease `name`
    /// (see `storage::lease`): waits for the lease, runs the worker while renewing it, stops
    /// the worker when the lease is lost (then waits for it again), and releases it at
    /// shutdown so another process takes over at once.
    pub fn leased<F, Fut>(&mut self, name: &'static str, leases: Leases, mut run: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        let mut stop = self.stop_signal();
        let restart_after = self.restart_after;
        self.spawn(name, async move {
            let poll = leases.renew_every();
            while let Some(held) = leases.acquire(name, poll, &mut stop).await {
                let (worker_tx, worker_rx) = watch::channel(false);
                let worker_tx = std::sync::Arc::new(worker_tx);
                let renewer = tokio::spawn(renew_until_stopped(
                    leases.clone(),
                    held,
                    stop.clone(),
                    worker_tx.clone(),
                ));
                keep_running(name, &mut run, worker_rx, restart_after).await;
                let _ = worker_tx.send(true); // the worker stopped: so does the renewal

                match renewer.await {
                    Ok(Some(held)) => {
                        if let Err(e) = leases.release(held).await {
                            tracing::warn!(lease = name, error = %e, "cannot release the lease; it expires");
                        }
                    }
                    Ok(None) => tracing::warn!(lease = name, "lease lost; worker stopped"),
                    Err(e) => tracing::error!(lease = name, error = %e, "lease renewal ended abnormally"),
                }
                if *stop.borrow() {
                    return;
                }
            }
        });
    }

    /// Stops every task and waits for each in order, at most `grace` each. Returns the
    /// names of the tasks that did not stop in time.
    pub async fn shutdown(self, grace: Duration) -> Vec<&'static str> {
        self.stop();
        let mut late = Vec::new();
        for (name, task) in self.tasks {
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "task ended abnormally"),
                Err(_) => {
                    tracing::warn!(task = name, "did not stop within {} s", grace.as_secs());
                    late.push(name);
                }
            }
        }
        late
    }
}

/// Runs `run(stop)` until it returns `Ok` or fails after `stop`; restarts it otherwise.
async fn keep_running<F, Fut>(
    name: &'static str,
    run: &mut F,
    stop: watch::Receiver<bool>,
    restart_after: Duration,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    loop {
        match run(stop.clone()).await {
            Ok(()) => return,
            Err(_) if *stop.borrow() => return,
            Err(e) => tracing::error!(task = name, error = %e, "stopped; restarting"),
        }
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(restart_after) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Renews `held` every [`Leases::renew_every`] until `stop` (returns the lease, to be
/// released) or until it is lost or cannot be renewed for [`Leases::give_up_after`]
/// (returns `None`); either way it tells the worker to stop through `worker`. It also
/// ends when the worker stopped by itself.
async fn renew_until_stopped(
    leases: Leases,
    mut held: Held,
    mut stop: watch::Receiver<bool>,
    worker: std::sync::Arc<watch::Sender<bool>>,
) -> Option<Held> {
    let mut worker_done = worker.subscribe();
    let kept = loop {
        tokio::select! {
            _ = tokio::time::sleep(leases.renew_every()) => {}
            _ = stop.changed() => break Some(held),
            _ = worker_done.changed() => break Some(held),
        }
        match leases.renew(&mut held).await {
            Ok(true) => {}
            Ok(false) => break None,
            Err(e) => {
                tracing::warn!(lease = %held.name, error = %e, "cannot renew the lease");
                if held.renewed.elapsed() >= leases.give_up_after() {
                    break None;
                }
            }
        }
    };
    let _ = worker.send(true);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::mpsc;

    use crate::Error;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn every_runs_passes_until_stopped_then_shutdown_waits() {
        let mut sup = Supervisor::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        sup.every("tick", Duration::from_millis(5), move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
            }
        });
        sup.every("off", Duration::ZERO, || async {});
        assert_eq!(sup.names(), vec!["tick"], "a zero interval starts nothing");
        for _ in 0..3 {
            let pass = tokio::time::timeout(WAIT, rx.recv()).await;
            assert_eq!(pass.ok().flatten(), Some(()));
        }
        assert_eq!(sup.shutdown(WAIT).await, Vec::<&str>::new());
        rx.close();
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "no pass after shutdown");
    }

    #[tokio::test]
    async fn a_woken_pass_runs_at_once_long_before_its_interval() {
        let mut sup = Supervisor::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        sup.every_or_woken(
            "hourly",
            Duration::from_secs(3600),
            wake.clone(),
            move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(());
                }
            },
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            rx.try_recv().is_err(),
            "no pass before a wake or the interval"
        );
        for _ in 0..2 {
            wake.notify_one();
            let pass = tokio::time::timeout(WAIT, rx.recv()).await;
            assert_eq!(pass.ok().flatten(), Some(()), "a wake runs a pass");
        }
        assert_eq!(sup.shutdown(WAIT).await, Vec::<&str>::new());
    }

    #[tokio::test]
    async fn failed_workers_restart_and_stop_ends_them() {
        let mut sup = Supervisor::new();
        sup.restart_after = Duration::from_millis(1);
        let starts = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = starts.clone();
        sup.restarting("worker", move |mut stop| {
            let (s, tx) = (s.clone(), tx.clone());
            async move {
                if s.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(Error::Unavailable("flaky".into()));
                }
                let _ = tx.send(());
                let _ = stop.changed().await;
                Ok(())
            }
        });
        let running = tokio::time::timeout(WAIT, rx.recv()).await;
        assert_eq!(running.ok().flatten(), Some(()));
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "two failures, two restarts"
        );
        assert!(sup.shutdown(WAIT).await.is_empty());
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "not restarted after it stopped"
        );
    }

    #[tokio::test]
    async fn shutdown_names_tasks_that_do_not_stop() {
        let mut sup = Supervisor::new();
        let stopped = Arc::new(AtomicU32::new(0));
        for name in ["first", "second"] {
            let mut stop = sup.stop_signal();
            let stopped = stopped.clone();
            sup.spawn(name, async move {
                let _ = stop.changed().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
        }
        sup.spawn("stuck", std::future::pending());
        let late = sup.shutdown(Duration::from_millis(200)).await;
        assert_eq!(late, vec!["stuck"]);
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            2,
            "both stopped before shutdown returned"
        );
    }
}
