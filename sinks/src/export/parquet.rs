//! Parquet files whose row groups are encoded column by column on several threads.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::{Error, Result};

/// An encoding error of any format.
pub(super) fn arrow_err(e: impl std::fmt::Display) -> Error {
    Error::Export(format!("encoding: {e}"))
}

/// Rows per Parquet row group (the parquet crate's default).
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// A Parquet file whose row groups are encoded column by column on several threads (the
/// parquet crate's `ArrowColumnWriter` API); the bytes do not depend on the thread count.
pub(super) struct ParallelParquet {
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    row_groups: usize,
    threads: usize,
}

impl ParallelParquet {
    pub(super) fn new(
        schema: SchemaRef,
        props: WriterProperties,
        threads: usize,
    ) -> Result<ParallelParquet> {
        // ArrowWriter sets up the file (and embeds the Arrow schema); we take it apart.
        let (writer, factory) = ArrowWriter::try_new(Vec::new(), schema, Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(arrow_err)?;
        Ok(ParallelParquet {
            writer,
            factory,
            buffered: Vec::new(),
            buffered_rows: 0,
            row_groups: 0,
            threads: threads.max(1),
        })
    }

    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            let take = (ROW_GROUP_ROWS - self.buffered_rows).min(batch.num_rows());
            self.buffered.push(batch.slice(0, take));
            self.buffered_rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.buffered_rows == ROW_GROUP_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Encodes the buffered rows as one row group, a column per task.
    fn flush(&mut self) -> Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        let writers = self
            .factory
            .create_column_writers(self.row_groups)
            .map_err(arrow_err)?;
        self.row_groups += 1;
        // leaves[b][c]: leaf column c of batch b (one per writer, in order).
        let mut leaves: Vec<Vec<ArrowLeafColumn>> = Vec::with_capacity(batches.len());
        for b in &batches {
            let mut row = Vec::with_capacity(writers.len());
            for (field, array) in b.schema_ref().fields().iter().zip(b.columns()) {
                row.extend(compute_leaves(field, array).map_err(arrow_err)?);
            }
            leaves.push(row);
        }
        let slots: Vec<std::sync::Mutex<Option<ArrowColumnWriter>>> = writers
            .into_iter()
            .map(|w| std::sync::Mutex::new(Some(w)))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let encode_one = |c: usize| -> Result<ArrowColumnChunk> {
            let mut w = slots[c]
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(|| Error::Export("column writer taken twice".into()))?;
            for row in &leaves {
                w.write(&row[c]).map_err(arrow_err)?;
            }
            w.close().map_err(arrow_err)
        };
        let work = || -> Result<Vec<(usize, ArrowColumnChunk)>> {
            let mut done = Vec::new();
            loop {
                let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if c >= slots.len() {
                    return Ok(done);
                }
                done.push((c, encode_one(c)?));
            }
        };
        let threads = self.threads.min(slots.len()).max(1);
        let mut chunks: Vec<(usize, ArrowColumnChunk)> = std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut all = work()?;
            for h in others {
                all.extend(
                    h.join()
                        .map_err(|_| Error::Export("an encoding thread panicked".into()))??,
                );
            }
            Ok::<_, Error>(all)
        })?;
        chunks.sort_by_key(|(c, _)| *c);
        let mut rg = self.writer.next_row_group().map_err(arrow_err)?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut rg).map_err(arrow_err)?;
        }
        rg.close().map_err(arrow_err)?;
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>> {
        self.flush()?;
        self.writer.into_inner().map_err(arrow_err)
    }
}
