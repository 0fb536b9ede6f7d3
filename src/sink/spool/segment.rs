//! sink spool segment: one segment file, its open writer (the last segment) and the
//! sequential reader of its records, `[u32 payload length LE][u32 CRC-32 LE][payload]`.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::{HEADER_BYTES, MAX_PAYLOAD_BYTES, READ_BUFFER_BYTES, SpoolSeq, with_path};

/// One segment file, as far as its records are valid.
#[derive(Debug)]
pub(super) struct Segment {
    /// Seq of the first record; also the file name.
    pub(super) first_seq: SpoolSeq,
    /// Valid records: seqs `first_seq..first_seq + records`.
    pub(super) records: u64,
    /// Bytes of those records, framing included (records still in the write buffer too).
    pub(super) bytes: u64,
    /// The file holds bytes past `bytes` that are not valid records: never appended to again.
    pub(super) sealed: bool,
    /// Seqs of records whose payload failed its CRC but whose frame was whole (the next
    /// record, or the end of the file, is where its length says): skipped, acknowledged at
    /// open, and passed over by the readers. Sorted.
    pub(super) damaged: Vec<SpoolSeq>,
}

impl Segment {
    /// One past the last seq the segment holds.
    pub(super) fn end(&self) -> SpoolSeq {
        self.first_seq + self.records
    }
}

/// The open handle on the last segment, which appends go to.
pub(super) struct SegmentWriter {
    /// Path of the file, for error messages.
    pub(super) path: PathBuf,
    /// Opened in append mode: every write lands at the end of the file.
    pub(super) file: File,
    /// Bytes of the file known to be whole records; a failed write is cut back to this.
    pub(super) written: u64,
    /// A write failed and cutting it back failed too: cut before the next write.
    pub(super) needs_cut: bool,
    /// Bytes written since the last fdatasync.
    pub(super) unsynced: bool,
}

/// A position between two records of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordPos {
    /// Which segment (its first seq).
    pub(super) segment_first_seq: SpoolSeq,
    /// Seq of the record starting at `offset`.
    pub(super) seq: SpoolSeq,
    /// Byte offset in the segment file.
    pub(super) offset: u64,
}

/// What reading one record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// A valid record; the reader moved past it.
    Record,
    /// The end of the segment, on a record boundary.
    End,
    /// A record that runs past the end of the segment.
    Torn,
    /// A complete record with a bad length or CRC.
    Corrupt,
    /// A complete record whose payload fails its CRC; `length` is its payload length, which
    /// the caller may trust (see [`Segment::damaged`]) to step over it with
    /// [`SegmentReader::skip_damaged`].
    BadCrc { length: u32 },
}

/// Reads one segment's records sequentially.
pub(super) struct SegmentReader {
    /// Which segment (its first seq), to know whether the reader can be reused.
    pub(super) segment_first_seq: SpoolSeq,
    /// Path of the file, for error messages.
    pub(super) path: PathBuf,
    pub(super) file: BufReader<File>,
    /// Seq of the next record.
    pub(super) seq: SpoolSeq,
    /// Offset of the next record.
    pub(super) offset: u64,
}

impl SegmentReader {
    pub(super) fn open(path: PathBuf, pos: RecordPos) -> io::Result<SegmentReader> {
        let mut file =
            File::open(&path).map_err(|error| with_path("open spool segment", &path, error))?;
        if pos.offset > 0 {
            file.seek(SeekFrom::Start(pos.offset))
                .map_err(|error| with_path("seek in spool segment", &path, error))?;
        }
        Ok(SegmentReader {
            segment_first_seq: pos.segment_first_seq,
            path,
            file: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            seq: pos.seq,
            offset: pos.offset,
        })
    }

    /// Reads the next record into `payload` when it is valid and ends at or before `end` (a file
    /// offset). Anything but [`Frame::Record`] (or a [`Frame::BadCrc`] stepped over) leaves the reader
    /// unusable: drop it.
    pub(super) fn read_record(&mut self, end: u64, payload: &mut Vec<u8>) -> io::Result<Frame> {
        let left = end.saturating_sub(self.offset);
        if left == 0 {
            return Ok(Frame::End);
        }
        if left < HEADER_BYTES as u64 {
            return Ok(Frame::Torn);
        }
        let mut header = [0u8; HEADER_BYTES];
        if !self.fill(&mut header)? {
            return Ok(Frame::Torn);
        }
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let length = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if length as usize > MAX_PAYLOAD_BYTES {
            return Ok(Frame::Corrupt);
        }
        if u64::from(length) > left - HEADER_BYTES as u64 {
            return Ok(Frame::Torn);
        }
        payload.clear();
        payload.resize(length as usize, 0);
        if !self.fill(payload)? {
            return Ok(Frame::Torn);
        }
        if crc32fast::hash(payload) != crc {
            return Ok(Frame::BadCrc { length });
        }
        self.offset += HEADER_BYTES as u64 + u64::from(length);
        self.seq += 1;
        Ok(Frame::Record)
    }

    /// Steps over the record [`Frame::BadCrc`] just reported (its bytes are read already).
    pub(super) fn skip_damaged(&mut self, length: u32) {
        self.offset += HEADER_BYTES as u64 + u64::from(length);
        self.seq += 1;
    }

    /// `read_exact`, with a file that ends early reported as `false`.
    pub(super) fn fill(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.file.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(error) => Err(with_path("read spool segment", &self.path, error)),
        }
    }

    pub(super) fn pos(&self) -> RecordPos {
        RecordPos {
            segment_first_seq: self.segment_first_seq,
            seq: self.seq,
            offset: self.offset,
        }
    }
}
