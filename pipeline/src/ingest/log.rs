//! The ingest log: one thread owns the current segment. Requests send encoded batches; the
//! thread writes every batch waiting in its queue, fsyncs once (group commit), then answers
//! them all. The flusher asks it to rotate: the current segment is sealed and handed over
//! with its batches (kept in memory, so committing never re-reads the file).
//!
//! With `ack = "commit"` no file is written: segments live in memory and requests wait for
//! the flusher to commit theirs.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use tokio::sync::{Notify, mpsc, oneshot};

use super::wal;
use crate::config::AckMode;
use crate::{Error, Result};

/// A sealed run of batches, committed to Delta as one transaction with `seq` as its version.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub bytes: u64,
    /// The WAL file to delete once committed (`None` with `ack = "commit"`).
    pub path: Option<PathBuf>,
}

enum Msg {
    Append {
        batch: RecordBatch,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Rotate {
        reply: oneshot::Sender<Result<Option<Segment>>>,
    },
}

/// Cheap handle to the log thread.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::Sender<Msg>,
    /// Bytes appended and not yet committed.
    pending_bytes: Arc<AtomicU64>,
    /// Set once a write failed: later appends are refused until restart, so nothing is
    /// ever appended behind a torn record.
    failed: Arc<AtomicBool>,
}

/// Settings of the log thread.
pub struct LogOptions {
    pub mode: AckMode,
    /// WAL directory (ignored with `ack = "commit"`).
    pub dir: PathBuf,
    /// First sequence number to use.
    pub next_seq: u64,
    /// Wake the flusher once the current segment holds this many rows.
    pub flush_rows: usize,
    pub flush_now: Arc<Notify>,
}

/// Appends collected for one group commit.
type Group = [(RecordBatch, Vec<u8>, oneshot::Sender<Result<u64>>)];

struct Current {
    seq: u64,
    file: Option<(File, PathBuf)>,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: u64,
}

impl Log {
    /// Starts the log thread.
    pub fn start(opts: LogOptions) -> Result<Log> {
        let (tx, rx) = mpsc::channel(4096);
        let pending_bytes = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (f, p) = (failed.clone(), pending_bytes.clone());
        std::thread::Builder::new()
            .name("tidemark-wal".into())
            .spawn(move || run(opts, rx, f, p))?;
        Ok(Log {
            tx,
            pending_bytes,
            failed,
        })
    }

    /// Appends a batch; returns the sequence number of the segment it landed in, once it
    /// is durable in the WAL (`ack = "wal"`) or accepted in memory (`ack = "commit"`).
    pub async fn append(&self, batch: RecordBatch, payload: Vec<u8>) -> Result<u64> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "the write-ahead log failed; restart tidemark".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append {
                batch,
                payload,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("the log is shut down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the log is shut down".into()))?
    }

    /// Seals the current segment; `None` when it is empty.
    pub async fn rotate(&self) -> Result<Option<Segment>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Rotate { reply })
            .await
            .map_err(|_| Error::Unavailable("the log is shut down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the log is shut down".into()))?
    }

    /// Bytes appended and not yet committed.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Acquire)
    }

    /// Called by the flusher after a segment is committed.
    pub fn committed(&self, bytes: u64) {
        let _ = self
            .pending_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            });
    }
}

fn run(
    opts: LogOptions,
    mut rx: mpsc::Receiver<Msg>,
    failed: Arc<AtomicBool>,
    pending_bytes: Arc<AtomicU64>,
) {
    let mut cur = Current {
        seq: opts.next_seq,
        file: None,
        batches: Vec::new(),
        rows: 0,
        bytes: 0,
    };
    let mut group = Vec::new();
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut rotate = None;
        let mut msg = Some(first);
        // Collect everything already waiting, up to a rotation.
        while let Some(m) = msg.take() {
            match m {
                Msg::Append {
                    batch,
                    payload,
                    reply,
                } => group.push((batch, payload, reply)),
                Msg::Rotate { reply } => {
                    rotate = Some(reply);
                    break;
                }
            }
            if group.len() < 4096 {
                msg = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let result = write_group(&opts, &mut cur, &mut group, &mut buf);
            match result {
                Ok(bytes) => {
                    cur.bytes += bytes;
                    pending_bytes.fetch_add(bytes, Ordering::AcqRel);
                    for (batch, _, reply) in group.drain(..) {
                        cur.rows += batch.num_rows();
                        cur.batches.push(batch);
                        let _ = reply.send(Ok(cur.seq));
                    }
                    if cur.rows >= opts.flush_rows {
                        opts.flush_now.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log write failed; refusing further appends");
                    failed.store(true, Ordering::Release);
                    for (_, _, reply) in group.drain(..) {
                        let _ = reply.send(Err(Error::Unavailable(format!(
                            "write-ahead log write failed: {e}"
                        ))));
                    }
                }
            }
        }
        if let Some(reply) = rotate {
            let _ = reply.send(Ok(seal(&mut cur)));
        }
    }
    // Channel closed: the process is shutting down. Data is already durable (or, with
    // `ack = "commit"`, was never acknowledged).
}

fn write_group(
    opts: &LogOptions,
    cur: &mut Current,
    group: &mut Group,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let bytes: u64 = group.iter().map(|(_, p, _)| p.len() as u64).sum();
    if opts.mode == AckMode::Commit {
        return Ok(bytes);
    }
    if cur.file.is_none() {
        cur.file = Some(wal::create_segment(&opts.dir, cur.seq)?);
    }
    let Some((file, _)) = cur.file.as_mut() else {
        return Err(Error::Unavailable("no open segment".into()));
    };
    buf.clear();
    for (_, payload, _) in group.iter() {
        wal::frame(payload, buf);
    }
    file.write_all(buf)?;
    file.sync_data()?;
    if buf.capacity() > 64 << 20 {
        *buf = Vec::new();
    }
    Ok(bytes)
}

fn seal(cur: &mut Current) -> Option<Segment> {
    if cur.batches.is_empty() {
        return None;
    }
    let seg = Segment {
        seq: cur.seq,
        batches: std::mem::take(&mut cur.batches),
        rows: cur.rows,
        bytes: cur.bytes,
        path: cur.file.take().map(|(_, p)| p),
    };
    cur.seq += 1;
    cur.rows = 0;
    cur.bytes = 0;
    Some(seg)
}
