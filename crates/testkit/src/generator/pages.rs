//! Grouping records into GetRecords pages, one JSON line each.
//!
//! A page is written only when the next record arrives or the shard ends,
//! so the last page is always known to be last and carries a null
//! `NextShardIterator`, as a closed shard's final page does.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::record::{shard_iterator, write_page};

pub(super) struct Pager<W: Write> {
    out: W,
    stream_arn: String,
    /// Iterators come from their own generator so that page size does not
    /// change the records themselves.
    rng: StdRng,
    page: Vec<u8>,
    in_page: usize,
    per_page: usize,
    empty_page_ratio: f64,
    pages: u64,
    /// Uncompressed bytes written so far.
    bytes: u64,
}

impl<W: Write> Pager<W> {
    pub(super) fn new(
        out: W,
        stream_arn: String,
        iterator_seed: u64,
        per_page: usize,
        empty_page_ratio: f64,
    ) -> Self {
        Pager {
            out,
            stream_arn,
            rng: StdRng::seed_from_u64(iterator_seed),
            page: Vec::new(),
            in_page: 0,
            per_page: per_page.max(1),
            empty_page_ratio: empty_page_ratio.clamp(0.0, 1.0),
            pages: 0,
            bytes: 0,
        }
    }

    /// Bytes written plus the page being filled.
    pub(super) fn bytes_so_far(&self) -> u64 {
        self.bytes + self.page.len() as u64
    }

    pub(super) fn push(&mut self, record: &[u8]) -> io::Result<()> {
        if self.in_page >= self.per_page {
            self.flush_page(false)?;
            // A reader polling an open shard often gets nothing back.
            if self.empty_page_ratio > 0.0 && self.rng.random_bool(self.empty_page_ratio) {
                self.flush_page(false)?;
            }
        }
        if self.in_page > 0 {
            self.page.push(b',');
        }
        self.page.extend_from_slice(record);
        self.in_page += 1;
        Ok(())
    }

    fn flush_page(&mut self, last: bool) -> io::Result<()> {
        let iterator = (!last).then(|| {
            let mut opaque = [0u8; 96];
            self.rng.fill(&mut opaque[..]);
            shard_iterator(&self.stream_arn, &opaque)
        });
        self.bytes += write_page(&mut self.out, &self.page, iterator.as_deref())?;
        self.pages += 1;
        self.page.clear();
        self.in_page = 0;
        Ok(())
    }

    /// Writes the final page (possibly empty) and hands back the writer,
    /// the page count and the uncompressed bytes written.
    pub(super) fn finish(mut self) -> io::Result<(W, u64, u64)> {
        self.flush_page(true)?;
        self.out.flush()?;
        Ok((self.out, self.pages, self.bytes))
    }
}

/// A capture file, compressed or not.
pub(super) enum FileOut {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<BufWriter<File>>>),
}

impl FileOut {
    pub(super) fn new(file: File, gzip: bool) -> Self {
        let w = BufWriter::with_capacity(1 << 16, file);
        if gzip {
            FileOut::Gzip(Box::new(GzEncoder::new(w, Compression::default())))
        } else {
            FileOut::Plain(w)
        }
    }

    /// Completes the gzip trailer and makes the file durable.
    pub(super) fn close(self) -> io::Result<()> {
        let w = match self {
            FileOut::Plain(w) => w,
            FileOut::Gzip(gz) => gz.finish()?,
        };
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

impl Write for FileOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            FileOut::Plain(w) => w.write(buf),
            FileOut::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            FileOut::Plain(w) => w.flush(),
            FileOut::Gzip(w) => w.flush(),
        }
    }
}
