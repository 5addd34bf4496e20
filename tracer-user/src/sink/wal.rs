//! The write-ahead log: one file per period for all tables, appended at every interval end, so
//! that a run keeps few files open and calls fsync once per `--sync-every` whatever the number
//! of tables.
//!
//! Format (version 1): a 16-byte header (`SCALPWAL`, version u32 LE, 4 reserved bytes), then
//! chunks `len u32 LE | crc32 u32 LE | bytes`, one per commit, written with one `write`. The
//! chunks' bytes, end to end, are one zstd stream (flushed at the end of every chunk, so each
//! chunk decodes with the ones before it) of records `len u32 LE | crc32 u32 LE | body`, the
//! body's first byte its kind:
//!
//! - `1` meta: JSON `[[key, value], …]`, the run's Parquet key-values (so that `recover` writes
//!   the same footers the run would have);
//! - `2` schema: table index u16 LE, table name length u8 and name, the Arrow IPC stream prefix
//!   (the schema message) of that table;
//! - `3` batch: table index u16 LE, one Arrow IPC record-batch message;
//! - `4` commit: commit number u64 LE.
//!
//! A file starts with a chunk holding meta, every table's schema and commit 0; each interval's
//! end appends a chunk with its batches and a commit. Nothing of an interval reaches the file
//! before its commit, and readers apply a group of records only once they have read its commit
//! record: an interval is in the log for every table or for none. A chunk cut short (a `kill -9`
//! or a power loss in the middle of its write) or damaged (its CRC) ends what can be read: it is
//! dropped and counted, never an error. Compressing the whole stream (not each record) lets
//! zstd see the previous intervals, which repeat the same processes and keys: the log costs a
//! fraction of what per-interval Parquet parts did.

use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::{
    reader::StreamDecoder,
    writer::{IpcWriteOptions, StreamWriter},
};
use arrow_schema::{ArrowError, SchemaRef};

pub const MAGIC: [u8; 8] = *b"SCALPWAL";
pub const VERSION: u32 = 1;
const HEADER: usize = 16;
/// zstd level: 3, zstd's default. Level 9 made the log 10 % smaller at 1 s intervals but its
/// match tables (tens of MiB) raised the run's RSS by as much (`cargo xtask bench layout`).
const LEVEL: i32 = 3;
/// Records larger than this are garbage (a torn length), not data.
const MAX_RECORD: usize = 1 << 30;

const META: u8 = 1;
const SCHEMA: u8 = 2;
const BATCH: u8 = 3;
const COMMIT: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// The log of the period in progress.
pub struct WalWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    bytes: u64,
    /// Compresses into memory; each commit moves what it produced into a chunk.
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    /// Per table, an IPC stream writer into a buffer that each record takes.
    streams: Vec<StreamWriter<Vec<u8>>>,
    commits: u64,
}

fn ipc_options() -> IpcWriteOptions {
    // 8-byte alignment: less padding than the default 64, and every reader copes.
    IpcWriteOptions::try_new(8, false, arrow_ipc::MetadataVersion::V5)
        .unwrap_or_else(|_| IpcWriteOptions::default())
}

fn table_index(t: usize) -> [u8; 2] {
    // Sinks have a handful of tables; u16 is the format's limit.
    (t as u16).to_le_bytes()
}

impl WalWriter {
    /// Creates `path` (it must not exist) with the meta, schema and first commit records,
    /// written through to the file.
    pub fn create(
        path: &Path,
        meta: &[(String, String)],
        tables: &[(&str, SchemaRef)],
    ) -> Result<WalWriter, WalError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        file.write_all(&header)?;
        let mut w = WalWriter {
            path: path.to_owned(),
            file,
            bytes: HEADER as u64,
            encoder: zstd::stream::write::Encoder::new(Vec::new(), LEVEL)?,
            streams: Vec::new(),
            commits: 0,
        };
        let pairs: Vec<[&str; 2]> = meta.iter().map(|(k, v)| [k.as_str(), v.as_str()]).collect();
        let mut body = vec![META];
        body.extend(serde_json::to_vec(&pairs).map_err(io::Error::other)?);
        w.record(&body)?;
        for (t, (name, schema)) in tables.iter().enumerate() {
            let mut stream = StreamWriter::try_new_with_options(Vec::new(), schema, ipc_options())?;
            let name = name.as_bytes();
            let mut body = vec![SCHEMA];
            body.extend(table_index(t));
            body.push(name.len().min(255) as u8);
            body.extend(&name[..name.len().min(255)]);
            body.append(stream.get_mut());
            w.record(&body)?;
            w.streams.push(stream);
        }
        w.commit()?;
        Ok(w)
    }

    fn record(&mut self, body: &[u8]) -> io::Result<()> {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
        self.encoder.write_all(&head)?;
        self.encoder.write_all(body)
    }

    /// Appends rows of table `t` (its index in the schemas given to `create`); they count once
    /// the next commit is written.
    pub fn append(&mut self, t: usize, batch: &RecordBatch) -> Result<(), WalError> {
        let stream = &mut self.streams[t];
        stream.write(batch)?;
        let mut body = vec![BATCH];
        body.extend(table_index(t));
        body.append(stream.get_mut());
        self.record(&body)?;
        Ok(())
    }

    /// Ends a group: the records appended since the last commit become one chunk of the file,
    /// visible to readers once this returns (durable after the next sync).
    pub fn commit(&mut self) -> Result<(), WalError> {
        self.commits += 1;
        let mut body = vec![COMMIT];
        body.extend((self.commits - 1).to_le_bytes());
        self.record(&body)?;
        self.encoder.flush()?;
        self.write_chunk()
    }

    /// Writes what the encoder produced as one chunk, with one `write`.
    fn write_chunk(&mut self) -> Result<(), WalError> {
        let bytes = std::mem::take(self.encoder.get_mut());
        if bytes.is_empty() {
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(bytes.len() + 8);
        chunk.extend((bytes.len() as u32).to_le_bytes());
        chunk.extend(crc32fast::hash(&bytes).to_le_bytes());
        chunk.extend(bytes);
        self.file.write_all(&chunk)?;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Bytes in the file.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the log (records appended since the last commit are left out); returns its file.
    pub fn close(self) -> File {
        self.file
    }
}

/// What followed the last commit of a log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// Complete records after the last commit (the interval in progress).
    pub records: u64,
    /// The log ended inside a record or a chunk (cut by a kill, or damaged).
    pub torn: bool,
    /// Bytes of the file after its last intact chunk.
    pub torn_bytes: u64,
}

impl Tail {
    pub fn dropped(&self) -> bool {
        self.records > 0 || self.torn
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The run was killed before the log's first commit: it holds nothing.
    #[error("the log holds no complete header")]
    Empty,
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The chunks of a log, end to end: their bytes while they are complete and intact.
struct Chunks {
    file: BufReader<File>,
    chunk: Vec<u8>,
    at: usize,
    /// Bytes after the last intact chunk (a chunk cut short or damaged).
    torn: u64,
    ended: bool,
}

impl Chunks {
    /// Loads the next chunk; false at the end of the intact ones.
    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let mut head = [0u8; 8];
        let got = read_up_to(&mut self.file, &mut head)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let intact = if got < 8 || len > MAX_RECORD {
            false
        } else {
            let mut chunk = vec![0u8; len];
            let n = read_up_to(&mut self.file, &mut chunk)?;
            if n == len && crc32fast::hash(&chunk) == crc {
                self.chunk = chunk;
                self.at = 0;
                true
            } else {
                self.torn += (got + n) as u64;
                false
            }
        };
        if !intact {
            self.ended = true;
            if got < 8 || len > MAX_RECORD {
                self.torn += got as u64;
            }
            // Whatever follows a bad chunk cannot be trusted either.
            let mut rest = Vec::new();
            self.torn += self.file.read_to_end(&mut rest)? as u64;
        }
        Ok(intact)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// How reading one record ended.
enum Next {
    Record(Vec<u8>),
    /// At a record boundary: the end of what was written so far.
    End,
    Torn,
}

/// Reads a log's committed groups, in order.
pub struct WalReader {
    input: zstd::stream::read::Decoder<'static, BufReader<Chunks>>,
    meta: Vec<(String, String)>,
    tables: Vec<(String, SchemaRef)>,
    decoders: Vec<StreamDecoder>,
    commits: u64,
    tail: Tail,
    done: bool,
}

impl WalReader {
    /// Reads the header, meta, schemas and first commit.
    pub fn open(mut file: File) -> Result<WalReader, OpenError> {
        let mut header = [0u8; HEADER];
        let mut got = 0;
        while got < HEADER {
            match file.read(&mut header[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if header[..got.min(8)] != MAGIC[..got.min(8)] {
            return Err(OpenError::Corrupt(
                "not a scalp-bpf write-ahead log".to_owned(),
            ));
        }
        if got < HEADER {
            return Err(OpenError::Empty);
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != VERSION {
            return Err(OpenError::Corrupt(format!(
                "write-ahead log version {version}; this scalp-bpf reads version {VERSION}"
            )));
        }
        let chunks = Chunks {
            file: BufReader::new(file),
            chunk: Vec::new(),
            at: 0,
            torn: 0,
            ended: false,
        };
        let input = zstd::stream::read::Decoder::new(chunks)?;
        let mut r = WalReader {
            input,
            meta: Vec::new(),
            tables: Vec::new(),
            decoders: Vec::new(),
            commits: 0,
            tail: Tail::default(),
            done: false,
        };
        loop {
            let Next::Record(body) = r.next_record() else {
                return Err(OpenError::Empty);
            };
            match body.first() {
                Some(&META) => {
                    let pairs: Vec<(String, String)> = serde_json::from_slice(&body[1..])
                        .map_err(|e| OpenError::Corrupt(format!("bad meta record: {e}")))?;
                    r.meta = pairs;
                }
                Some(&SCHEMA) if body.len() >= 4 => {
                    let len = usize::from(body[3]);
                    let name = body
                        .get(4..4 + len)
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .ok_or_else(|| OpenError::Corrupt("bad schema record".to_owned()))?;
                    let bytes = &body[4 + len..];
                    let schema = arrow_ipc::convert::try_schema_from_ipc_buffer(bytes)
                        .map_err(|e| OpenError::Corrupt(format!("bad schema record: {e}")))?;
                    // The decoder takes the schema message too; it acts on it (a message
                    // without a body) when the first batch's bytes come.
                    let mut decoder = StreamDecoder::new();
                    let mut buf = Buffer::from_vec(bytes.to_vec());
                    while !buf.is_empty() {
                        decoder
                            .decode(&mut buf)
                            .map_err(|e| OpenError::Corrupt(format!("bad schema record: {e}")))?;
                    }
                    let schema = std::sync::Arc::new(schema);
                    r.tables.push((name, schema));
                    r.decoders.push(decoder);
                }
                Some(&COMMIT) => return Ok(r),
                _ => {
                    return Err(OpenError::Corrupt(
                        "unexpected record in the header".to_owned(),
                    ));
                }
            }
        }
    }

    pub fn meta(&self) -> &[(String, String)] {
        &self.meta
    }

    pub fn tables(&self) -> &[(String, SchemaRef)] {
        &self.tables
    }

    /// Groups committed after the header, so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// What followed the last commit (once `next_group` returned `None`).
    pub fn tail(&self) -> Tail {
        self.tail
    }

    /// Reads `buf.len()` bytes unless the stream ends first; `Err` (with the count read) when
    /// the stream is cut or damaged.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A truncated or damaged zstd stream: the end of what can be read.
                Err(_) => return Err(got),
            }
        }
        Ok(got)
    }

    fn next_record(&mut self) -> Next {
        let mut head = [0u8; 8];
        match self.read_full(&mut head) {
            Ok(8) => {}
            // Nothing of a new record: the end of what was written (the zstd stream of a log
            // that was not closed ends without its frame's end: an error, at a record boundary
            // all the same). Whether a chunk was cut is the chunks' to say.
            Ok(0) | Err(0) => return Next::End,
            Ok(_) | Err(_) => return Next::Torn,
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD {
            return Next::Torn;
        }
        let mut body = vec![0u8; len];
        match self.read_full(&mut body) {
            Ok(n) if n == len => {}
            _ => return Next::Torn,
        }
        if crc32fast::hash(&body) != crc {
            return Next::Torn;
        }
        Next::Record(body)
    }

    /// The next committed group: (table index, rows) in write order. `None` at the end of what
    /// is committed; [`WalReader::tail`] then says what was dropped.
    pub fn next_group(&mut self) -> Option<Vec<(usize, RecordBatch)>> {
        if self.done {
            return None;
        }
        let mut group = Vec::new();
        let mut records = 0u64;
        loop {
            let body = match self.next_record() {
                Next::Record(body) => body,
                Next::End => {
                    self.finish(records, false);
                    return None;
                }
                Next::Torn => {
                    self.finish(records, true);
                    return None;
                }
            };
            match body.first() {
                Some(&BATCH) if body.len() >= 3 => {
                    let t = usize::from(u16::from_le_bytes([body[1], body[2]]));
                    let Some(decoder) = self.decoders.get_mut(t) else {
                        self.finish(records, true);
                        return None;
                    };
                    let mut buf = Buffer::from_vec(body[3..].to_vec());
                    while !buf.is_empty() {
                        match decoder.decode(&mut buf) {
                            Ok(Some(batch)) => group.push((t, batch)),
                            Ok(None) => {}
                            Err(_) => {
                                self.finish(records, true);
                                return None;
                            }
                        }
                    }
                    records += 1;
                }
                Some(&COMMIT) => {
                    self.commits += 1;
                    return Some(group);
                }
                _ => {
                    self.finish(records, true);
                    return None;
                }
            }
        }
    }

    fn finish(&mut self, records: u64, torn: bool) {
        self.done = true;
        let cut = self.input.get_ref().get_ref().torn;
        self.tail = Tail {
            records,
            torn: torn || cut > 0,
            torn_bytes: cut,
        };
    }
}

// The tests (and helpers other modules' tests use) are in a file of their own.
#[cfg(test)]
#[path = "wal_tests.rs"]
pub mod tests;
