//! sink spool: the on-disk queue between alert encoding and Kafka. Every alert the Kafka sink
//! takes is appended here first and produced from here, in order; it leaves the spool when the
//! broker acknowledges it, so what is unacknowledged (broker down, producer queue full, a
//! restart or a `kill -9`) is re-sent.
//!
//! # On-disk format
//! One directory holds:
//! - segment files `NNNNNNNNNNNNNNNNNNNN.v2.spool`, named by the seq of their first record (20
//!   decimal digits, zero-padded, so names sort like seqs). A segment is a run of records
//!   `[frame marker FF FE 58 46][u32 payload length LE][u64 seq LE][u32 CRC-32 (IEEE) LE of
//!   the length, the seq and the payload][payload]`; the record at index `i` has seq
//!   `first_seq + i` unless damage lost some (the stored seq says). The last segment is
//!   appended to; it is closed (written and fdatasync'ed) when the next record would take it
//!   past [`SEGMENT_BYTES`], and only then is the next segment created. A payload is at most
//!   [`MAX_PAYLOAD_BYTES`], so a corrupt length never causes a large allocation.
//! - segment files of the first format, `NNNNNNNNNNNNNNNNNNNN.spool` (from older versions):
//!   `[u32 payload length LE][u32 CRC-32 of the payload LE][payload]`, seqs not stored. They
//!   are read (and deleted once delivered), never appended to: the next append starts a v2
//!   segment.
//! - `acked`, the acknowledged cursor: `"EXFLACK1"`, `u64 LE` seq below which every entry is
//!   acknowledged, `u32 LE` count `n`, `n × u64 LE` seqs acknowledged beyond it (out of order,
//!   at most [`MAX_ACKS_AHEAD`]), `u32 LE` CRC-32 of everything before. It is replaced
//!   atomically: write `acked.tmp`, fdatasync, rename, fsync the directory.
//! - `lock`, an empty file locked (`flock`) while a [`Spool`] is open: a second process using
//!   the same directory is refused instead of corrupting it.
//!
//! # Recovery ([`Spool::open`])
//! Every record of every segment is read and checked (marker, length bound, CRC, seq) in seq
//! order. A damaged record of a v2 segment, whatever is damaged (the length too), costs only
//! the records it destroyed: recovery scans on for the next frame marker that starts a valid
//! frame whose seq fits (the one expected or a later one, at most 1024 lost per segment),
//! reads on from there, and counts the damage in `corrupt_records`; the lost seqs are treated
//! as acknowledged and readers step over the damaged bytes. In a v1 segment only a record whose
//! payload fails its CRC inside a whole frame (its length leads to the next valid record or to
//! the end of the file) can be stepped over. A bad record with no valid record after it (a
//! frame cut short at the end, or any damage in a v1 segment's length) ends the reading of its
//! segment:
//! - in the last segment the bad tail is cut off (the file is truncated and fdatasync'ed). An
//!   incomplete record at the end of the file (a write cut short by a crash) counts in
//!   [`SpoolCounters::torn_tails`]; a complete record that fails its checks counts in
//!   [`SpoolCounters::corrupt_records`].
//! - in an earlier segment (which was fdatasync'ed before the next one was created, so damage
//!   there is not a crash artefact) any bad record, incomplete or not, counts in
//!   `corrupt_records`; the file is left as it is for inspection (until its valid entries are
//!   acknowledged and it is deleted), the entries after the bad record are lost (their seqs stay
//!   unused) and the next segment is read normally. Records beyond the next segment's first
//!   seq are bad too.
//! - a missing `acked` file means nothing was acknowledged yet; a corrupt one counts in
//!   `corrupt_records` and every entry still on disk is re-sent (at least once, never lost).
//! - segments that are entirely acknowledged (a crash between the cursor update and the delete)
//!   are deleted.
//!
//! # A full disk
//! A write that fails writes the whole records that fit, keeps the rest of the write buffer in
//! memory (at most `WRITE_BUFFER_BYTES`; appends beyond it fail) and retries it at the next
//! [`Spool::sync`]; [`Spool::read`] goes on delivering what is on disk; [`Spool::buffered`]
//! counts the entries held. The held records move to a segment of their own (an empty file),
//! so the one holding the records on disk can be deleted once they are delivered, which frees
//! the space the held ones need. A cursor that cannot be written still lets fully
//! acknowledged segments be deleted (they were delivered).
//!
//! # Delivery
//! At least once, in seq order per [`Spool::read`]. [`Spool::ack`] marks an entry delivered in
//! memory; [`Spool::commit_acks`] makes that durable. An entry acknowledged but not yet committed
//! when the process dies is re-sent after the restart: that is the only source of duplicates.
//! Entries appended after the last [`Spool::sync`] may be lost by a crash (`append` buffers; the
//! owner syncs in batches). Dropping a `Spool` without [`Spool::close`] behaves like `kill -9`.
//!
//! Seqs: every entry keeps its seq across restarts and new appends continue above every seq still
//! on disk or acknowledged. A seq whose entry was lost before it reached the disk intact (not yet
//! synced, torn, or behind a corrupt record of the last segment) may be handed out again.
//!
//! Size cap: `max_bytes` counts the bytes (framing included) after the committed acknowledged
//! prefix, i.e. what the disk must keep. Acknowledged entries stop counting at `commit_acks`.
//!
//! A record found damaged after recovery (the file changed under the spool) ends its segment the
//! same way, counted in `corrupt_records`; reading goes on with the next segment.
//!
//! All errors name the file or directory involved. Nothing here panics, on any file content.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tracing::warn;

mod acks;
mod recovery;
mod segment;
#[cfg(test)]
mod test_support;

use acks::{load_acked, write_acked_file};
use recovery::{list_segments, recover_segment};
use segment::{
    Format, Frame, RecordPos, Segment, SegmentReader, SegmentWriter, encode_record, record_len,
};

/// Sequence number of an entry: strictly increasing in append order, kept across restarts.
pub type SpoolSeq = u64;

/// A segment is closed and a new one started when the next record would take it past this.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Longest payload [`Spool::append`] accepts (alerts are about 1 KB); recovery treats a longer
/// length field as corruption.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Most acknowledgements kept beyond the contiguous acknowledged prefix (acks arriving out of
/// order from different Kafka partitions). More are forgotten and counted: those entries are
/// re-sent after a restart.
pub const MAX_ACKS_AHEAD: usize = 16 * 1024;

/// Appends are collected in memory up to this many bytes before they are written to the file.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Buffer of the sequential segment reader.
const READ_BUFFER_BYTES: usize = 64 * 1024;

const SEGMENT_NAME_DIGITS: usize = 20;
const ACKED_FILE: &str = "acked";
const ACKED_TMP_FILE: &str = "acked.tmp";
const LOCK_FILE: &str = "lock";
const ACKED_MAGIC: [u8; 8] = *b"EXFLACK1";
/// magic + cursor + count + crc
const ACKED_FIXED_BYTES: usize = 8 + 8 + 4 + 4;
const ACKED_MAX_BYTES: usize = ACKED_FIXED_BYTES + 8 * MAX_ACKS_AHEAD;

/// Why [`Spool::append`] did not store a payload.
#[derive(Debug)]
pub enum AppendError {
    /// Storing it would take the unacknowledged bytes past the spool's `max_bytes`
    /// (backpressure: counted in [`SpoolCounters::dropped_full`]).
    Full,
    /// Writing the segment failed (the message names the file), or the payload is longer than
    /// [`MAX_PAYLOAD_BYTES`] (kind `InvalidInput`, counted in
    /// [`SpoolCounters::dropped_too_large`]).
    Io(io::Error),
}

impl AppendError {
    /// Static code, usable as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            AppendError::Full => "full",
            AppendError::Io(_) => "io",
        }
    }
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full => f.write_str("spool is full"),
            AppendError::Io(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Io(error) => Some(error),
            AppendError::Full => None,
        }
    }
}

/// What the spool did since it was opened (recovery included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolCounters {
    /// Entries stored by `append`.
    pub appended: u64,
    /// Appends refused because the spool was full.
    pub dropped_full: u64,
    /// Appends refused because the payload was longer than [`MAX_PAYLOAD_BYTES`].
    pub dropped_too_large: u64,
    /// Entries acknowledged (each entry once).
    pub acked: u64,
    /// Acks not kept because [`MAX_ACKS_AHEAD`] acks beyond the prefix were pending already.
    pub acks_forgotten: u64,
    /// Bad records found (each stops the reading of its segment) plus a corrupt `acked` file.
    pub corrupt_records: u64,
    /// Incomplete records cut off the end of the last segment at recovery.
    pub torn_tails: u64,
}

/// An append-only, crash-safe, size-capped on-disk queue of alert payloads (see the module doc
/// for the format, the recovery rules and the delivery guarantee).
///
/// Memory does not grow per entry: the spool keeps one small struct per segment file, the acks
/// beyond the acknowledged prefix (bounded) and a write buffer (bounded); payloads are read back
/// from the files.
pub struct Spool {
    /// Directory of the segments, the `acked` file and the lock; named in errors.
    dir: PathBuf,
    /// Cap on unacknowledged bytes (framing included); an append past it is refused.
    max_bytes: u64,
    /// Size at which a segment is closed ([`SEGMENT_BYTES`] outside tests).
    segment_bytes: u64,
    /// Segment files in seq order; appends go to the last one.
    segments: VecDeque<Segment>,
    /// Sum of `Segment::bytes`.
    segment_bytes_total: u64,
    /// Open handle on the last segment; `None` until the first append after open, rotation or
    /// the deletion of a fully acknowledged last segment. Records in `pending` imply `Some`.
    writer: Option<SegmentWriter>,
    /// Framed records appended to the last segment, not yet written to its file (bounded by
    /// `WRITE_BUFFER_BYTES`; on a full disk it holds what could not be written until space
    /// returns).
    pending: Vec<u8>,
    /// Records in `pending`: the last ones of the last segment, not readable until written.
    pending_records: u64,
    /// Seq of the next append.
    next_seq: SpoolSeq,
    /// Every entry with a smaller seq is acknowledged (in memory). When it is below `next_seq`
    /// it is the seq of an existing, unacknowledged entry.
    acked_below: SpoolSeq,
    /// Acknowledged entries above `acked_below` (acks out of order); all exist; bounded by
    /// [`MAX_ACKS_AHEAD`].
    acked_ahead: BTreeSet<SpoolSeq>,
    /// The acks changed since the `acked` file was written.
    acks_dirty: bool,
    /// `acked_below` as the `acked` file holds it: segments below it may be deleted.
    durable_acked_below: SpoolSeq,
    /// Where `durable_acked_below` falls in the front segment: bytes before it no longer count
    /// against `max_bytes`.
    committed: RecordPos,
    /// Sequential reader kept between `read` calls, so draining is one pass over the files.
    reader: Option<SegmentReader>,
    /// A segment file was created since the directory was last fsynced.
    dir_unsynced: bool,
    /// Payload buffer for records that are read only to be skipped.
    scratch: Vec<u8>,
    /// Held (locked) while the spool is open, so a second process cannot use `dir`;
    /// unlocked on drop.
    lock: File,
    counters: SpoolCounters,
}

impl Spool {
    /// Opens or creates the spool in `dir` (created when missing) and recovers it (see the module
    /// doc). `max_bytes` caps the unacknowledged bytes, framing included.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Spool> {
        Spool::open_with_segment_bytes(dir, max_bytes, SEGMENT_BYTES)
    }

    /// [`Spool::open`] with segments closed at `segment_bytes` instead of [`SEGMENT_BYTES`]
    /// (a segment always holds at least one record).
    pub fn open_with_segment_bytes(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> anyhow::Result<Spool> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spool directory '{}'", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot create spool lock '{}'", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                bail!(
                    "spool directory '{}' is in use by another process",
                    dir.display()
                )
            }
            Err(TryLockError::Error(error)) => {
                return Err(error)
                    .with_context(|| format!("cannot lock spool '{}'", lock_path.display()));
            }
        }
        let tmp_path = dir.join(ACKED_TMP_FILE);
        match fs::remove_file(&tmp_path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot remove '{}'", tmp_path.display()));
            }
        }

        let mut counters = SpoolCounters::default();
        let (acked_below, acked_ahead) = load_acked(dir, &mut counters)?;
        let files = list_segments(dir)?;
        let mut segments = VecDeque::with_capacity(files.len());
        for (index, &(first_seq, format)) in files.iter().enumerate() {
            let next_first_seq = files.get(index + 1).map(|&(seq, _)| seq);
            segments.push_back(recover_segment(
                dir,
                first_seq,
                format,
                next_first_seq,
                &mut counters,
            )?);
        }
        let segment_bytes_total = segments.iter().map(|segment| segment.bytes).sum();
        let next_seq = segments.back().map_or(0, Segment::end).max(acked_below);

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            segments,
            segment_bytes_total,
            writer: None,
            pending: Vec::new(),
            pending_records: 0,
            next_seq,
            acked_below,
            acked_ahead: BTreeSet::new(),
            acks_dirty: false,
            durable_acked_below: 0,
            committed: RecordPos {
                segment_first_seq: 0,
                seq: 0,
                offset: 0,
            },
            reader: None,
            dir_unsynced: false,
            scratch: Vec::new(),
            lock,
            counters,
        };
        for seq in acked_ahead {
            if seq > spool.acked_below && spool.exists(seq) {
                spool.acked_ahead.insert(seq);
            }
        }
        // Damaged records are never sent: as good as acknowledged (beyond the bound of acks
        // ahead they are acknowledged when the reader steps over them at the front).
        let damaged: Vec<SpoolSeq> = spool
            .segments
            .iter()
            .flat_map(|segment| segment.gaps.iter().flat_map(|gap| gap.seq..gap.resume_seq))
            .collect();
        for seq in damaged {
            if seq >= spool.acked_below && spool.acked_ahead.len() < MAX_ACKS_AHEAD {
                spool.acked_ahead.insert(seq);
            }
        }
        // Everything `advance_acked_prefix` passes over is acknowledged in the file or does not
        // exist, so the result is as durable as the file.
        spool.advance_acked_prefix();
        spool.durable_acked_below = spool.acked_below;
        spool.delete_acked_segments().map_err(anyhow::Error::from)?;
        spool.advance_committed().map_err(anyhow::Error::from)?;
        Ok(spool)
    }

    /// Appends one payload and returns its seq. Buffered: durable after the next
    /// [`Spool::sync`]. Refused (nothing stored, counted) when full or too large; an I/O error
    /// also stores nothing.
    pub fn append(&mut self, payload: &[u8]) -> Result<SpoolSeq, AppendError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            self.counters.dropped_too_large += 1;
            return Err(AppendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "alert of {} bytes is longer than the spool's limit of \
                     {MAX_PAYLOAD_BYTES} bytes",
                    payload.len()
                ),
            )));
        }
        if self.next_seq == SpoolSeq::MAX {
            return Err(AppendError::Io(io::Error::other(format!(
                "spool '{}' has used up its sequence numbers",
                self.dir.display()
            ))));
        }
        let record_bytes = (Format::V2.header_bytes() + payload.len()) as u64;
        if self.bytes().saturating_add(record_bytes) > self.max_bytes {
            self.counters.dropped_full += 1;
            return Err(AppendError::Full);
        }
        // Written before the record is accepted, so a failure leaves no half-stored entry.
        if self.pending.len() + record_bytes as usize > WRITE_BUFFER_BYTES {
            self.write_pending().map_err(AppendError::Io)?;
        }
        self.prepare_segment(record_bytes)
            .map_err(AppendError::Io)?;
        let Some(segment) = self.segments.back_mut() else {
            return Err(AppendError::Io(io::Error::other(
                "spool has no segment to append to",
            )));
        };
        segment.records += 1;
        segment.bytes += record_bytes;
        self.segment_bytes_total += record_bytes;
        let seq = self.next_seq;
        encode_record(seq, payload, &mut self.pending);
        self.pending_records += 1;
        self.next_seq += 1;
        self.counters.appended += 1;
        Ok(seq)
    }

    /// Makes every append so far durable: writes the buffer, fdatasyncs the segment and, when a
    /// segment was created, fsyncs the directory.
    pub fn sync(&mut self) -> io::Result<()> {
        self.write_pending()?;
        if let Some(writer) = self.writer.as_mut()
            && writer.unsynced
        {
            writer
                .file
                .sync_data()
                .map_err(|error| with_path("sync spool segment", &writer.path, error))?;
            writer.unsynced = false;
        }
        if self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Entries not yet acknowledged.
    pub fn len(&self) -> u64 {
        let first = self
            .segments
            .partition_point(|segment| segment.end() <= self.acked_below);
        let unacked: u64 = self
            .segments
            .range(first..)
            .map(|segment| segment.end() - segment.first_seq.max(self.acked_below))
            .sum();
        unacked.saturating_sub(self.acked_ahead.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.acked_below >= self.next_seq
    }

    /// Bytes (framing included) counted against `max_bytes`: everything after the committed
    /// acknowledged prefix. Entries acknowledged but not yet committed still count (they are
    /// re-sent after a crash, so the disk must keep them), and so do acks beyond the prefix
    /// until the prefix passes them.
    pub fn bytes(&self) -> u64 {
        let committed_offset = match self.segments.front() {
            Some(front) if front.first_seq == self.committed.segment_first_seq => {
                self.committed.offset
            }
            _ => 0,
        };
        self.segment_bytes_total.saturating_sub(committed_offset)
    }

    /// The oldest unacknowledged seq (`None` when empty).
    pub fn first_unacked(&self) -> Option<SpoolSeq> {
        (self.acked_below < self.next_seq).then_some(self.acked_below)
    }

    /// The seq the next append gets.
    pub fn next_seq(&self) -> SpoolSeq {
        self.next_seq
    }

    /// Appends to `out` up to `max` unacknowledged entries with seq >= `from`, in seq order.
    /// Entries appended but not yet synced are included. Consecutive calls that continue where
    /// the last one stopped read the files sequentially.
    ///
    /// A record found damaged now (the file changed after recovery) ends its segment as in
    /// recovery: counted, the entries after it lost, reading goes on with the next segment.
    pub fn read(
        &mut self,
        from: SpoolSeq,
        max: usize,
        out: &mut Vec<(SpoolSeq, Vec<u8>)>,
    ) -> io::Result<()> {
        if max == 0 {
            return Ok(());
        }
        // On a full disk the buffer stays in memory; what is on disk is still delivered (the
        // write error is the owner's to see at `sync`).
        let _ = self.write_pending();
        let mut seq = from.max(self.acked_below);
        let mut taken = 0;
        // Each turn reads to the end of a segment, fills `out` or shortens a segment: it ends.
        while taken < max {
            let index = self
                .segments
                .partition_point(|segment| segment.end() <= seq);
            if index >= self.segments.len() {
                break;
            }
            let (first_seq, end, end_offset) = self.on_disk(index);
            seq = seq.max(first_seq);
            if seq >= end {
                break; // only buffered records are left
            }
            let mut reader = match self.reader.take() {
                Some(reader) if reader.segment_first_seq == first_seq && reader.seq <= seq => {
                    reader
                }
                _ => match self.open_reader(index, seq) {
                    Ok(reader) => reader,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        self.seal_segment(index, first_seq, 0, &error.to_string());
                        continue;
                    }
                    Err(error) => return Err(error),
                },
            };
            let mut damaged = None;
            while reader.seq < end && taken < max {
                if let Some(gap) = self
                    .segments
                    .get(index)
                    .and_then(|s| s.gap_at(reader.offset))
                {
                    // Damaged bytes recovery found: their entries are lost, as acknowledged.
                    for lost in gap.seq..gap.resume_seq {
                        self.ack(lost);
                    }
                    reader.jump(gap.resume_offset, gap.resume_seq)?;
                    continue;
                }
                let record_seq = reader.seq;
                let wanted = record_seq >= seq && !self.acked_ahead.contains(&record_seq);
                let mut payload = Vec::new();
                let buffer = if wanted {
                    &mut payload
                } else {
                    &mut self.scratch
                };
                match reader.read_record(end_offset, buffer)? {
                    Frame::Record if wanted => {
                        out.push((record_seq, payload));
                        taken += 1;
                    }
                    Frame::Record => {}
                    frame => {
                        damaged = Some(frame);
                        break;
                    }
                }
            }
            seq = seq.max(reader.seq);
            match damaged {
                Some(frame) => {
                    let why = format!("{frame:?} record at offset {}", reader.offset);
                    self.seal_segment(index, reader.seq, reader.offset, &why);
                }
                None => self.reader = Some(reader),
            }
        }
        Ok(())
    }

    /// Marks one entry delivered. Acks may come in any order; an ack of an entry that is already
    /// acknowledged or does not exist is ignored.
    pub fn ack(&mut self, seq: SpoolSeq) {
        if seq < self.acked_below || !self.exists(seq) {
            return;
        }
        if seq == self.acked_below {
            self.acked_below += 1;
            self.advance_acked_prefix();
        } else if self.acked_ahead.contains(&seq) {
            return;
        } else if self.acked_ahead.len() >= MAX_ACKS_AHEAD {
            self.counters.acks_forgotten += 1;
            return;
        } else {
            self.acked_ahead.insert(seq);
        }
        self.counters.acked += 1;
        self.acks_dirty = true;
    }

    /// Makes the acks durable (the `acked` file, replaced atomically, holds the prefix and the
    /// acks beyond it) and deletes the segment files that are entirely acknowledged. Until this
    /// returns, acknowledged entries are re-sent after a crash.
    pub fn commit_acks(&mut self) -> io::Result<()> {
        if self.acks_dirty {
            if let Err(error) = write_acked_file(&self.dir, self.acked_below, &self.acked_ahead) {
                // A full disk: free the segments that are delivered anyway. Deleting one before
                // the cursor says so is safe: after a crash its entries are gone, and they were
                // delivered.
                self.delete_segments_below(self.acked_below)?;
                return Err(error);
            }
            self.acks_dirty = false;
            self.durable_acked_below = self.acked_below;
        }
        self.delete_acked_segments()?;
        self.advance_committed()
    }

    /// Syncs the appends and commits the acks: the clean shutdown.
    pub fn close(mut self) -> io::Result<()> {
        self.sync()?;
        self.commit_acks()
    }

    pub fn counters(&self) -> SpoolCounters {
        self.counters
    }

    /// Entries appended but held in memory because they could not be written yet (a full
    /// disk): not readable until written, lost if the process ends first.
    pub fn buffered(&self) -> u64 {
        self.pending_records
    }

    /// Segment `index`'s first seq, and the seq and offset where its records on disk end
    /// (the last segment's buffered records are not on disk yet).
    fn on_disk(&self, index: usize) -> (SpoolSeq, SpoolSeq, u64) {
        let Some(segment) = self.segments.get(index) else {
            return (0, 0, 0);
        };
        if index + 1 == self.segments.len() {
            (
                segment.first_seq,
                segment.end() - self.pending_records,
                segment.bytes - self.pending.len() as u64,
            )
        } else {
            (segment.first_seq, segment.end(), segment.bytes)
        }
    }

    /// Whether `seq` is an entry the spool holds (acknowledged or not).
    fn exists(&self, seq: SpoolSeq) -> bool {
        let index = self
            .segments
            .partition_point(|segment| segment.end() <= seq);
        self.segments
            .get(index)
            .is_some_and(|segment| segment.first_seq <= seq)
    }

    /// The smallest existing seq >= `seq`.
    fn next_existing(&self, seq: SpoolSeq) -> Option<SpoolSeq> {
        let index = self
            .segments
            .partition_point(|segment| segment.end() <= seq);
        self.segments
            .range(index..)
            .find(|segment| segment.records > 0)
            .map(|segment| segment.first_seq.max(seq))
    }

    /// Moves `acked_below` past acknowledged entries and seqs that hold no entry, so that it is
    /// the first unacknowledged entry (or `next_seq`). Each turn removes an ack: it ends.
    fn advance_acked_prefix(&mut self) {
        loop {
            match self.next_existing(self.acked_below) {
                None => {
                    self.acked_below = self.next_seq;
                    self.acked_ahead.clear();
                    return;
                }
                Some(seq) => {
                    self.acked_below = seq;
                    if !self.acked_ahead.remove(&seq) {
                        return;
                    }
                    self.acked_below = seq + 1;
                }
            }
        }
    }

    /// Makes sure the last segment can take a record of `record_bytes`: reopens it after a
    /// restart, or closes it (written and fdatasync'ed, so only the last segment can ever have a
    /// torn tail) and creates the next one.
    fn prepare_segment(&mut self, record_bytes: u64) -> io::Result<()> {
        let reusable = self.segments.back().is_some_and(|last| {
            // Older formats are read, never appended to.
            last.format == Format::V2
                && !last.sealed
                && last.end() == self.next_seq
                && (last.bytes == 0 || last.bytes + record_bytes <= self.segment_bytes)
        });
        if reusable {
            if self.writer.is_none()
                && let Some(last) = self.segments.back()
            {
                let path = segment_path(&self.dir, last.first_seq, last.format);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|error| with_path("open spool segment", &path, error))?;
                let file_bytes = file
                    .metadata()
                    .map_err(|error| with_path("stat spool segment", &path, error))?
                    .len();
                if file_bytes < last.bytes {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "spool segment '{}' is shorter ({file_bytes} bytes) than its records \
                             ({} bytes)",
                            path.display(),
                            last.bytes
                        ),
                    ));
                }
                self.writer = Some(SegmentWriter {
                    path,
                    file,
                    written: last.bytes,
                    needs_cut: file_bytes > last.bytes,
                    unsynced: false,
                });
            }
            return Ok(());
        }
        if self.writer.is_some() {
            self.write_pending()?;
            if let Some(writer) = self.writer.as_mut() {
                writer
                    .file
                    .sync_data()
                    .map_err(|error| with_path("sync spool segment", &writer.path, error))?;
            }
            self.writer = None;
        }
        let path = segment_path(&self.dir, self.next_seq, Format::V2);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| with_path("create spool segment", &path, error))?;
        self.segments.push_back(Segment::new(self.next_seq));
        self.writer = Some(SegmentWriter {
            path,
            file,
            written: 0,
            needs_cut: false,
            unsynced: false,
        });
        self.dir_unsynced = true;
        Ok(())
    }

    /// Writes the buffered records to the last segment (no fdatasync). On failure the buffer is
    /// kept and the file cut back to its last whole record, so a retry appends cleanly.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(io::Error::other(format!(
                "spool '{}' has buffered records but no open segment",
                self.dir.display()
            )));
        };
        if writer.needs_cut {
            writer
                .file
                .set_len(writer.written)
                .map_err(|error| with_path("truncate spool segment", &writer.path, error))?;
            writer.needs_cut = false;
        }
        if let Err(error) = writer.file.write_all(&self.pending) {
            writer.needs_cut = writer.file.set_len(writer.written).is_err();
            if writer.needs_cut {
                return Err(with_path("write spool segment", &writer.path, error));
            }
            // A full disk: write as many whole records as fit, one at a time, and keep the
            // rest buffered, so what the disk can take is readable (and delivered).
            let mut done = 0;
            let mut records = 0;
            while let Some(length) = self.pending.get(done..).and_then(record_len) {
                let end = done + length;
                let Some(record) = self.pending.get(done..end) else {
                    break;
                };
                if writer.file.write_all(record).is_err() {
                    writer.needs_cut = writer.file.set_len(writer.written + done as u64).is_err();
                    break;
                }
                done = end;
                records += 1;
            }
            writer.written += done as u64;
            writer.unsynced |= done > 0;
            self.pending.drain(..done);
            self.pending_records -= records;
            let error = with_path("write spool segment", &writer.path, error);
            self.split_off_pending();
            return Err(error);
        }
        writer.written += self.pending.len() as u64;
        writer.unsynced = true;
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// On a full disk: moves the records held in the write buffer to a segment of their own
    /// (its file created empty: a directory entry, no data), so the segment with the records
    /// on disk is complete and can be deleted once they are delivered. That frees the space
    /// the held records need; without it a single segment could never be deleted (it would
    /// always hold undelivered records) and the spool would stay stuck. The closed segment is
    /// fdatasync'ed first (best effort: the disk is full, not failing). When the new file
    /// cannot be created, nothing changes and the next failed write tries again.
    fn split_off_pending(&mut self) {
        let Some(last) = self.segments.back() else {
            return;
        };
        let whole = self.writer.as_ref().is_some_and(|writer| !writer.needs_cut);
        if self.pending_records == 0 || last.records <= self.pending_records || !whole {
            return;
        }
        let first_seq = last.end() - self.pending_records;
        let path = segment_path(&self.dir, first_seq, Format::V2);
        let Ok(file) = OpenOptions::new().append(true).create_new(true).open(&path) else {
            return;
        };
        if let Some(closed) = self.writer.take()
            && closed.unsynced
            && let Err(error) = closed.file.sync_data()
        {
            warn!("{}", with_path("sync spool segment", &closed.path, error));
        }
        let pending_bytes = self.pending.len() as u64;
        if let Some(last) = self.segments.back_mut() {
            last.records -= self.pending_records;
            last.bytes -= pending_bytes;
        }
        self.segments.push_back(Segment {
            records: self.pending_records,
            bytes: pending_bytes,
            ..Segment::new(first_seq)
        });
        self.writer = Some(SegmentWriter {
            path,
            file,
            written: 0,
            needs_cut: false,
            unsynced: false,
        });
        self.dir_unsynced = true;
    }

    /// Deletes front segments whose entries are all acknowledged in the `acked` file.
    fn delete_acked_segments(&mut self) -> io::Result<()> {
        self.delete_segments_below(self.durable_acked_below)
    }

    /// Deletes front segments whose entries are all below `below`.
    fn delete_segments_below(&mut self, below: SpoolSeq) -> io::Result<()> {
        while let Some(front) = self.segments.front()
            && front.end() <= below
        {
            let (first_seq, bytes) = (front.first_seq, front.bytes);
            let path = segment_path(&self.dir, first_seq, front.format);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(with_path("delete spool segment", &path, error)),
            }
            if self.segments.len() == 1 {
                // The last segment: its buffered records are acknowledged, nothing to write.
                self.writer = None;
                self.pending.clear();
                self.pending_records = 0;
            }
            if self
                .reader
                .as_ref()
                .is_some_and(|reader| reader.segment_first_seq == first_seq)
            {
                self.reader = None;
            }
            self.segments.pop_front();
            self.segment_bytes_total -= bytes;
        }
        Ok(())
    }

    /// Moves `committed` to `durable_acked_below` in the front segment, reading the records in
    /// between to learn their sizes.
    fn advance_committed(&mut self) -> io::Result<()> {
        let Some(front) = self.segments.front() else {
            return Ok(());
        };
        let (first_seq, format) = (front.first_seq, front.format);
        // Written if it can be (a full disk keeps the buffer, and the bound below excludes it).
        let _ = self.write_pending();
        let (_, end, end_offset) = self.on_disk(0);
        if self.committed.segment_first_seq != first_seq {
            self.committed = RecordPos {
                segment_first_seq: first_seq,
                seq: first_seq,
                offset: 0,
            };
        }
        let target = self.durable_acked_below.min(end);
        if self.committed.seq >= target {
            return Ok(());
        }
        let path = segment_path(&self.dir, first_seq, format);
        let mut reader = match SegmentReader::open(path, format, self.committed) {
            Ok(reader) => reader,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.seal_segment(0, first_seq, 0, &error.to_string());
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        while reader.seq < target {
            if let Some(gap) = self.segments.front().and_then(|s| s.gap_at(reader.offset)) {
                reader.jump(gap.resume_offset, gap.resume_seq)?;
                continue;
            }
            match reader.read_record(end_offset, &mut self.scratch)? {
                Frame::Record => {}
                frame => {
                    let why = format!("{frame:?} record at offset {}", reader.offset);
                    self.seal_segment(0, reader.seq, reader.offset, &why);
                    return Ok(());
                }
            }
        }
        self.committed = reader.pos();
        Ok(())
    }

    /// Opens a reader on segment `index` positioned at record `seq`, starting from the committed
    /// position when it is before `seq` (skipping what is behind it).
    fn open_reader(&mut self, index: usize, seq: SpoolSeq) -> io::Result<SegmentReader> {
        let Some(segment) = self.segments.get(index) else {
            return Err(io::Error::other("spool segment index out of range"));
        };
        let (first_seq, format) = (segment.first_seq, segment.format);
        let start = if self.committed.segment_first_seq == first_seq && self.committed.seq <= seq {
            self.committed
        } else {
            RecordPos {
                segment_first_seq: first_seq,
                seq: first_seq,
                offset: 0,
            }
        };
        SegmentReader::open(segment_path(&self.dir, first_seq, format), format, start)
    }

    /// Ends segment `index` at `end_seq` / `end_offset` because the record there is damaged
    /// (found after recovery): the entries after it are lost. Counted and logged.
    fn seal_segment(&mut self, index: usize, end_seq: SpoolSeq, end_offset: u64, why: &str) {
        let Some(segment) = self.segments.get_mut(index) else {
            return;
        };
        let end_seq = end_seq.clamp(segment.first_seq, segment.end());
        let end_offset = end_offset.min(segment.bytes);
        let lost = end_seq..segment.end();
        let path = segment_path(&self.dir, segment.first_seq, segment.format);
        warn!(
            path = %path.display(),
            lost_first_seq = lost.start,
            lost_entries = lost.end - lost.start,
            "spool segment damaged since it was opened ({why}); the entries after it are lost"
        );
        self.segment_bytes_total -= segment.bytes - end_offset;
        segment.records = end_seq - segment.first_seq;
        segment.bytes = end_offset;
        segment.sealed = true;
        if self.committed.segment_first_seq == segment.first_seq
            && self.committed.offset > end_offset
        {
            self.committed.seq = end_seq;
            self.committed.offset = end_offset;
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|reader| reader.segment_first_seq == segment.first_seq)
        {
            self.reader = None;
        }
        self.counters.corrupt_records += 1;
        self.acked_ahead.retain(|seq| !lost.contains(seq));
        self.advance_acked_prefix();
        self.acks_dirty = true;
    }
}

fn segment_path(dir: &Path, first_seq: SpoolSeq, format: Format) -> PathBuf {
    dir.join(format!(
        "{first_seq:0width$}{}",
        format.suffix(),
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Adds the action and the path to an I/O error, keeping its kind.
fn with_path(action: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot {action} '{}': {error}", path.display()),
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| with_path("sync spool directory", dir, error))
}

impl Drop for Spool {
    /// Unlocks before the descriptor closes: a child forked meanwhile (any `Command` of
    /// the process) holds a copy of it until it execs, and the lock, which belongs to the
    /// open file, would outlive the spool until then.
    fn drop(&mut self) {
        let _ = self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::spool::test_support::*;

    #[test]
    fn spool_round_trip_keeps_order() {
        let dir = TempDir::new("round-trip");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.first_unacked(), None);
        assert_eq!(spool.append(b"first").unwrap(), 0);
        assert_eq!(spool.append(b"second").unwrap(), 1);
        assert_eq!(spool.append(b"").unwrap(), 2);
        spool.sync().unwrap();
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.bytes(), 20 + 5 + 20 + 6 + 20);

        let mut out = Vec::new();
        spool.read(0, 2, &mut out).unwrap();
        assert_eq!(out, vec![(0, b"first".to_vec()), (1, b"second".to_vec())]);
        spool.read(2, 10, &mut out).unwrap();
        assert_eq!(out[2], (2, Vec::new()));
        assert_eq!(out.len(), 3);

        spool.ack(0);
        spool.ack(1);
        assert_eq!(spool.first_unacked(), Some(2));
        assert_eq!(spool.len(), 1);
        spool.commit_acks().unwrap();
        assert_eq!(spool.bytes(), 20);
        assert_eq!(read_all(&mut spool), vec![(2, Vec::new())]);
        spool.ack(2);
        spool.commit_acks().unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.append(b"fourth").unwrap(), 3);
        let counters = spool.counters();
        assert_eq!(counters.appended, 4);
        assert_eq!(counters.acked, 3);
    }

    #[test]
    fn spool_reopen_after_commit_keeps_unacked_and_seqs() {
        let dir = TempDir::new("reopen");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 5);
        spool.sync().unwrap();
        spool.ack(0);
        spool.ack(1);
        spool.commit_acks().unwrap();
        drop(spool);

        let mut spool = open_small(&dir);
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.first_unacked(), Some(2));
        assert_eq!(
            read_all(&mut spool),
            vec![(2, alert(2)), (3, alert(3)), (4, alert(4))]
        );
        assert_eq!(spool.append(&alert(5)).unwrap(), 5);
        let expected = SpoolCounters {
            appended: 1,
            dropped_full: 0,
            dropped_too_large: 0,
            acked: 0,
            acks_forgotten: 0,
            corrupt_records: 0,
            torn_tails: 0,
        };
        assert_eq!(spool.counters(), expected);
    }

    #[test]
    fn spool_reopen_after_everything_was_acked_continues_the_seqs() {
        let dir = TempDir::new("reopen-empty");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 4);
        for seq in 0..4 {
            spool.ack(seq);
        }
        spool.close().unwrap();
        assert_eq!(dir.segment_names(), Vec::<String>::new());

        let mut spool = open_small(&dir);
        assert!(spool.is_empty());
        assert_eq!(spool.append(&alert(4)).unwrap(), 4);
        assert_eq!(dir.segment_names(), vec!["00000000000000000004.v2.spool"]);
    }

    #[test]
    fn spool_size_cap_refuses_then_makes_room_after_commit() {
        let dir = TempDir::new("cap");
        let mut spool = Spool::open(&dir.0, 3 * RECORD).unwrap();
        append_all(&mut spool, 3);
        assert_eq!(spool.bytes(), 3 * RECORD);
        assert!(matches!(spool.append(&alert(3)), Err(AppendError::Full)));
        assert_eq!(spool.counters().dropped_full, 1);
        assert_eq!(spool.counters().appended, 3);

        spool.ack(0);
        // Acknowledged but not committed: still needed on disk, still counted.
        assert!(matches!(spool.append(&alert(3)), Err(AppendError::Full)));
        assert_eq!(spool.counters().dropped_full, 2);
        spool.commit_acks().unwrap();
        assert_eq!(spool.bytes(), 2 * RECORD);
        assert_eq!(spool.append(&alert(3)).unwrap(), 3);
        assert!(matches!(spool.append(&alert(4)), Err(AppendError::Full)));
        assert_eq!(seqs(&read_all(&mut spool)), vec![1, 2, 3]);

        let too_large = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        let roomy_dir = TempDir::new("cap-large");
        let mut roomy = Spool::open(&roomy_dir.0, u64::MAX).unwrap();
        let error = roomy.append(&too_large).unwrap_err();
        assert_eq!(error.code(), "io");
        assert_eq!(
            error.to_string(),
            "alert of 1048577 bytes is longer than the spool's limit of 1048576 bytes"
        );
        assert_eq!(roomy.counters().dropped_too_large, 1);
        assert_eq!(roomy.counters().appended, 0);
    }

    #[test]
    fn spool_rotates_segments_and_deletes_acked_ones() {
        let dir = TempDir::new("rotation");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 7);
        spool.sync().unwrap();
        assert_eq!(
            dir.segment_names(),
            vec![
                "00000000000000000000.v2.spool",
                "00000000000000000003.v2.spool",
                "00000000000000000006.v2.spool",
            ]
        );
        assert_eq!(fs::metadata(dir.segment(0)).unwrap().len(), 3 * RECORD);
        assert_eq!(fs::metadata(dir.segment(6)).unwrap().len(), RECORD);

        for seq in 0..4 {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert_eq!(
            dir.segment_names(),
            vec![
                "00000000000000000003.v2.spool",
                "00000000000000000006.v2.spool"
            ]
        );
        assert_eq!(spool.bytes(), 3 * RECORD);
        assert_eq!(spool.len(), 3);
        assert_eq!(seqs(&read_all(&mut spool)), vec![4, 5, 6]);

        for seq in 4..7 {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert_eq!(dir.segment_names(), Vec::<String>::new());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.append(&alert(7)).unwrap(), 7);
        assert_eq!(dir.segment_names(), vec!["00000000000000000007.v2.spool"]);
    }

    #[test]
    fn spool_unwritable_directory_names_the_path() {
        let dir = TempDir::new("unwritable");
        fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("regular-file");
        fs::write(&file, b"not a directory").unwrap();
        let spool_dir = file.join("spool");

        let message = format!("{:#}", Spool::open(&spool_dir, 1 << 20).err().unwrap());
        let expected = format!("cannot create spool directory '{}': ", spool_dir.display());
        assert!(message.starts_with(&expected), "{message}");
    }

    #[test]
    fn spool_directory_is_locked_while_open() {
        let dir = TempDir::new("lock");
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let message = format!("{:#}", Spool::open(&dir.0, 1 << 20).err().unwrap());
        let expected = format!(
            "spool directory '{}' is in use by another process",
            dir.0.display()
        );
        assert_eq!(message, expected);
        drop(spool);
        assert!(Spool::open(&dir.0, 1 << 20).is_ok());
    }

    #[test]
    fn spool_reads_what_is_appended_after_a_read() {
        let dir = TempDir::new("read-append");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        append_all(&mut spool, 2);
        let mut out = Vec::new();
        spool.read(0, 10, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![0, 1]);
        // The reader stopped at the end of the file; the next read continues from there.
        spool.append(&alert(2)).unwrap();
        spool.append(&alert(3)).unwrap();
        out.clear();
        spool.read(2, 10, &mut out).unwrap();
        assert_eq!(out, vec![(2, alert(2)), (3, alert(3))]);
        // Reading again from an earlier seq starts over.
        out.clear();
        spool.read(1, 2, &mut out).unwrap();
        assert_eq!(seqs(&out), vec![1, 2]);
    }

    #[test]
    fn spool_many_entries_pass_through_the_write_buffer_and_segments() {
        let dir = TempDir::new("many");
        // 1000-byte payloads: 1020-byte records, 100 per 102,000-byte segment; 600 entries
        // fill the 256 KiB write buffer twice over.
        let mut spool = Spool::open_with_segment_bytes(&dir.0, 1 << 30, 100 * 1020).unwrap();
        for n in 0..600u32 {
            let payload = vec![(n % 251) as u8; 1000];
            assert_eq!(spool.append(&payload).unwrap(), u64::from(n));
        }
        spool.sync().unwrap();
        assert_eq!(dir.segment_names().len(), 6);
        assert_eq!(spool.bytes(), 600 * 1020);
        for seq in 0..250 {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert_eq!(dir.segment_names().len(), 4);
        assert_eq!(spool.bytes(), 350 * 1020);
        drop(spool);

        let mut spool = Spool::open_with_segment_bytes(&dir.0, 1 << 30, 100 * 1020).unwrap();
        assert_eq!(spool.len(), 350);
        let mut out = Vec::new();
        spool.read(0, 1000, &mut out).unwrap();
        assert_eq!(out.len(), 350);
        for (index, (seq, payload)) in out.iter().enumerate() {
            assert_eq!(*seq, 250 + index as u64);
            assert_eq!(payload, &vec![(*seq % 251) as u8; 1000]);
        }
        assert_eq!(spool.counters().corrupt_records, 0);
    }

    #[test]
    fn spool_damage_after_open_ends_the_segment_and_is_counted() {
        let dir = TempDir::new("damage-after-open");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 9);
        spool.sync().unwrap();
        // Flip the crc of seq 1 (offset 27 + 16 in segment 0) behind the spool's back.
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 16) as usize] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        // And lose segment 3 entirely.
        fs::remove_file(dir.segment(3)).unwrap();

        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 6, 7, 8]);
        assert_eq!(spool.counters().corrupt_records, 2);
        assert_eq!(spool.len(), 4);
        assert_eq!(spool.bytes(), 4 * RECORD);
        spool.ack(0);
        assert_eq!(spool.first_unacked(), Some(6));
        for seq in 6..9 {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert!(spool.is_empty());
        assert_eq!(dir.segment_names(), Vec::<String>::new());
        assert_eq!(spool.append(&alert(9)).unwrap(), 9);
    }

    /// A 64 KiB tmpfs mounted on a fresh directory (root only), unmounted on drop.
    struct SmallFs(PathBuf);

    impl SmallFs {
        fn mount(test: &str) -> Option<SmallFs> {
            let path =
                std::env::temp_dir().join(format!("exflow-smallfs-{}-{test}", std::process::id()));
            fs::create_dir_all(&path).ok()?;
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !mounted {
                let _ = fs::remove_dir(&path);
                eprintln!("skipped: mounting a small tmpfs needs root");
                return None;
            }
            Some(SmallFs(path))
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn spool_full_disk_keeps_delivering_what_is_on_disk() {
        let Some(small) = SmallFs::mount("full") else {
            return;
        };
        let dir = small.0.join("spool");
        let mut spool = Spool::open(&dir, u64::MAX).unwrap();
        // 1000-byte payloads: the 64 KiB disk takes about 60 records, the write buffer holds
        // 260 more (256 KiB), beyond that appends fail.
        let payload = |n: u64| vec![(n % 251) as u8; 1000];
        let mut stored = 0u64;
        let mut failed = 0u64;
        for n in 0..400u64 {
            // The Kafka sink syncs after every batch of alerts it takes.
            if n % 10 == 0 {
                let _ = spool.sync();
            }
            match spool.append(&payload(n)) {
                Ok(seq) => {
                    assert_eq!(seq, stored);
                    stored += 1;
                }
                Err(AppendError::Io(_)) => failed += 1,
                Err(AppendError::Full) => panic!("no cap configured"),
            }
        }
        assert!(spool.sync().is_err(), "the disk is full");
        let buffered = spool.buffered();
        let on_disk = stored - buffered;
        assert!(
            on_disk > 0 && buffered > 0 && failed > 0,
            "{on_disk} {buffered} {failed}"
        );
        assert_eq!(stored + failed, 400);
        assert_eq!(spool.len(), stored);
        // The read path delivers what is on disk, whatever the write buffer holds.
        let mut out = Vec::new();
        spool.read(0, usize::MAX, &mut out).unwrap();
        assert_eq!(seqs(&out), (0..on_disk).collect::<Vec<_>>());
        assert!(out.iter().all(|(seq, p)| *p == payload(*seq)));
        for seq in 0..on_disk {
            spool.ack(seq);
        }
        let _ = spool.commit_acks();
        assert_eq!(spool.len(), buffered);
        assert_eq!(spool.counters().corrupt_records, 0);

        // Delivering what is on disk frees it, so the held records reach the disk, a diskful
        // at a time, and are delivered in turn: nothing stays stuck in memory.
        let mut delivered = seqs(&out);
        for _ in 0..20 {
            if spool.is_empty() {
                break;
            }
            let _ = spool.sync();
            out.clear();
            spool.read(0, usize::MAX, &mut out).unwrap();
            assert!(out.iter().all(|(seq, p)| *p == payload(*seq)));
            for (seq, _) in &out {
                spool.ack(*seq);
            }
            delivered.extend(seqs(&out));
            let _ = spool.commit_acks();
        }
        assert!(
            spool.is_empty(),
            "{} left, {} held",
            spool.len(),
            spool.buffered()
        );
        assert_eq!(delivered, (0..stored).collect::<Vec<_>>());
        assert_eq!(spool.buffered(), 0);
        spool.sync().unwrap();
        spool.commit_acks().unwrap();
        assert_eq!(spool.counters().corrupt_records, 0);
        assert_eq!(spool.append(&payload(0)).unwrap(), stored);
    }
}
