//! The write-ahead log's on-disk format.
//!
//! A segment file is a header (`TMWAL001` + sequence number) followed by records
//! `[len: u32 LE][crc32(payload): u32 LE][payload]`, where the payload is one Arrow IPC
//! stream holding one record batch. A crash can leave a torn last record; reading stops at
//! the first record whose length or checksum does not match, which is always past the last
//! acknowledged (fsynced) record.

use std::fs::{self, File, OpenOptions};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::storage::paths::wal as wal_paths;
use crate::{Error, Result};

pub use super::wal_frame::{frame, unframe};

const MAGIC: &[u8; 8] = b"TMWAL001";
const HEADER_LEN: usize = 16;

/// Encodes a batch as the payload of one record.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    {
        let mut w = StreamWriter::try_new(&mut buf, batch.schema_ref())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

/// Decodes a record payload back into its batches.
pub fn decode_batches(payload: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(payload), None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

fn wal_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Wal {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Makes a directory entry change (create, delete) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates segment `seq` with its header, durably.
pub fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf)> {
    let path = wal_paths::segment(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| wal_err(&path, format!("cannot create: {e}")))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&seq.to_le_bytes());
    file.write_all(&header)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// A segment read back from disk.
#[derive(Debug)]
pub struct ReadSegment {
    pub seq: u64,
    pub batches: Vec<RecordBatch>,
    /// Bytes of intact records.
    pub bytes: u64,
    /// Whether a torn or corrupt tail was dropped.
    pub torn: bool,
}

/// Reads every intact record of a segment file.
pub fn read_segment(path: &Path) -> Result<ReadSegment> {
    let data = fs::read(path)?;
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        // A crash right after creating the file can leave a short header: nothing was
        // acknowledged from it.
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(wal_paths::parse_segment)
            .ok_or_else(|| wal_err(path, "not a WAL segment"))?;
        return Ok(ReadSegment {
            seq,
            batches: Vec::new(),
            bytes: 0,
            torn: !data.is_empty(),
        });
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&data[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let (records, torn) = unframe(&data[HEADER_LEN..]);
    let mut batches = Vec::new();
    let mut bytes = 0u64;
    for payload in records {
        bytes += payload.len() as u64;
        batches.extend(decode_batches(payload).map_err(|e| {
            wal_err(
                path,
                format!("record with a valid checksum does not decode: {e}"),
            )
        })?);
    }
    Ok(ReadSegment {
        seq,
        batches,
        bytes,
        torn,
    })
}

/// Segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(wal_paths::parse_segment)
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes a committed segment, durably.
pub fn remove_segment(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::batch::build_batch;
    use crate::ingest::event::{BodyFormat, parse_batch};
    use proptest::prelude::*;

    fn batch(n: usize) -> RecordBatch {
        let body: String = (0..n)
            .map(|i| {
                format!("{{\"event_id\":\"e{i}\",\"event_name\":\"n\",\"user_id\":\"u{i}\"}}\n")
            })
            .collect();
        let ev = parse_batch(body.as_bytes(), BodyFormat::Ndjson, &Default::default()).unwrap();
        build_batch("default", 1_714_564_800_000_000, &ev, &vec![true; n]).unwrap()
    }

    #[test]
    fn records_round_trip_through_a_segment_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, path) = create_segment(dir.path(), 7).unwrap();
        let mut buf = Vec::new();
        for n in [1, 3] {
            frame(&encode_batch(&batch(n)).unwrap(), &mut buf);
        }
        f.write_all(&buf).unwrap();
        let seg = read_segment(&path).unwrap();
        assert_eq!(seg.seq, 7);
        assert!(!seg.torn);
        assert_eq!(
            seg.batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(seg.batches[1], batch(3));
        assert_eq!(list_segments(dir.path()).unwrap(), vec![(7, path)]);
    }

    #[test]
    fn a_flipped_bit_ends_the_segment_there() {
        let mut buf = Vec::new();
        frame(b"first", &mut buf);
        let second_at = buf.len();
        frame(b"second", &mut buf);
        frame(b"third", &mut buf);
        buf[second_at + 8 + 2] ^= 1; // a byte of the second payload
        let (records, torn) = unframe(&buf);
        assert_eq!(records, vec![&b"first"[..]]);
        assert!(torn);
    }

    #[test]
    fn a_short_header_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_paths::segment(dir.path(), 3);
        fs::write(&path, b"TMW").unwrap();
        let seg = read_segment(&path).unwrap();
        assert_eq!((seg.seq, seg.batches.len(), seg.torn), (3, 0, true));
    }

    proptest! {
        /// Cutting a log anywhere yields exactly the records wholly before the cut.
        #[test]
        fn truncation_keeps_exactly_the_complete_prefix(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..12),
            cut_frac in 0.0f64..=1.0,
        ) {
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            for p in &payloads {
                frame(p, &mut buf);
                ends.push(buf.len());
            }
            let cut = ((buf.len() as f64) * cut_frac) as usize;
            let (records, torn) = unframe(&buf[..cut]);
            let complete = ends.iter().filter(|e| **e <= cut).count();
            prop_assert_eq!(records.len(), complete);
            for (r, p) in records.iter().zip(&payloads) {
                prop_assert_eq!(*r, p.as_slice());
            }
            prop_assert_eq!(torn, cut != 0 && !ends.contains(&cut));
        }
    }
}
