//! sink spool segment: one segment file, its open writer (the last segment) and the
//! sequential reader of its records, in either format (see [`Format`]).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::{MAX_PAYLOAD_BYTES, READ_BUFFER_BYTES, SpoolSeq, with_path};

/// The record format of a segment file, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Format {
    /// `NNN.spool`, written before frame markers: `[u32 payload length LE][u32 CRC-32 of the
    /// payload LE][payload]`, seqs implicit (the record at index `i` has seq `first_seq + i`).
    /// Read, never written.
    V1,
    /// `NNN.v2.spool`: `[FRAME_MARKER][u32 payload length LE][u64 seq LE][u32 CRC-32 LE of the
    /// length, the seq and the payload][payload]`. The marker lets recovery find the next
    /// record after a damaged one (a damaged length included), the seq says which it is.
    V2,
}

/// Starts every v2 record. 0xFF and 0xFE never occur in UTF-8, so never in an alert's text;
/// where the bytes occur by chance (in a checksum) the frame's own checksum rejects them.
pub(super) const FRAME_MARKER: [u8; 4] = [0xFF, 0xFE, b'X', b'F'];

const V1_HEADER_BYTES: usize = 8;
const V2_HEADER_BYTES: usize = 20;

impl Format {
    /// Record framing bytes before the payload.
    pub(super) fn header_bytes(self) -> usize {
        match self {
            Format::V1 => V1_HEADER_BYTES,
            Format::V2 => V2_HEADER_BYTES,
        }
    }

    /// File name suffix after the 20-digit first seq.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Format::V1 => ".spool",
            Format::V2 => ".v2.spool",
        }
    }
}

/// Appends one v2 record to `out`.
pub(super) fn encode_record(seq: SpoolSeq, payload: &[u8], out: &mut Vec<u8>) {
    // Callers check the length against MAX_PAYLOAD_BYTES, which fits a u32.
    let length = (payload.len() as u32).to_le_bytes();
    let seq = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&length);
    crc.update(&seq);
    crc.update(payload);
    out.extend_from_slice(&FRAME_MARKER);
    out.extend_from_slice(&length);
    out.extend_from_slice(&seq);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes of the v2 record that starts `buffer`, when its header is there.
pub(super) fn record_len(buffer: &[u8]) -> Option<usize> {
    let length = buffer.get(4..8)?;
    let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
    Some(V2_HEADER_BYTES + length as usize)
}

/// Damaged bytes of a segment that readers step over: from the record at `offset` (seq `seq`)
/// to the next valid one at `resume_offset` (seq `resume_seq`). The seqs in between are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    pub(super) offset: u64,
    pub(super) seq: SpoolSeq,
    pub(super) resume_offset: u64,
    pub(super) resume_seq: SpoolSeq,
}

/// One segment file, as far as its records are valid.
#[derive(Debug)]
pub(super) struct Segment {
    /// Seq of the first record; also the file name.
    pub(super) first_seq: SpoolSeq,
    /// The file's record format (its name says which).
    pub(super) format: Format,
    /// Valid records: seqs `first_seq..first_seq + records` (less the gaps' seqs).
    pub(super) records: u64,
    /// Bytes of those records, framing included (records still in the write buffer too).
    pub(super) bytes: u64,
    /// The file holds bytes past `bytes` that are not valid records: never appended to again.
    pub(super) sealed: bool,
    /// Damaged stretches recovery found a valid record after: their seqs are lost
    /// (acknowledged at open), readers step over them. Sorted by offset; bounded.
    pub(super) gaps: Vec<Gap>,
}

impl Segment {
    /// An empty segment of the current format.
    pub(super) fn new(first_seq: SpoolSeq) -> Segment {
        Segment {
            first_seq,
            format: Format::V2,
            records: 0,
            bytes: 0,
            sealed: false,
            gaps: Vec::new(),
        }
    }

    /// One past the last seq the segment holds.
    pub(super) fn end(&self) -> SpoolSeq {
        self.first_seq + self.records
    }

    /// The gap that starts at `offset`, if any.
    pub(super) fn gap_at(&self, offset: u64) -> Option<Gap> {
        self.gaps
            .binary_search_by_key(&offset, |gap| gap.offset)
            .ok()
            .and_then(|index| self.gaps.get(index).copied())
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
    /// A complete record with a bad marker, length or seq.
    Corrupt,
    /// A complete record whose CRC fails; `length` is its payload length (in a v1 segment,
    /// recovery trusts it when a valid record follows, see `recovery`).
    BadCrc { length: u32 },
}

/// Reads one segment's records sequentially.
pub(super) struct SegmentReader {
    /// Which segment (its first seq), to know whether the reader can be reused.
    pub(super) segment_first_seq: SpoolSeq,
    /// Path of the file, for error messages.
    pub(super) path: PathBuf,
    pub(super) format: Format,
    pub(super) file: BufReader<File>,
    /// Seq of the next record.
    pub(super) seq: SpoolSeq,
    /// Offset of the next record.
    pub(super) offset: u64,
}

impl SegmentReader {
    pub(super) fn open(path: PathBuf, format: Format, pos: RecordPos) -> io::Result<SegmentReader> {
        let mut file =
            File::open(&path).map_err(|error| with_path("open spool segment", &path, error))?;
        if pos.offset > 0 {
            file.seek(SeekFrom::Start(pos.offset))
                .map_err(|error| with_path("seek in spool segment", &path, error))?;
        }
        Ok(SegmentReader {
            segment_first_seq: pos.segment_first_seq,
            path,
            format,
            file: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            seq: pos.seq,
            offset: pos.offset,
        })
    }

    /// Reads the next record into `payload` when it is valid, is the seq expected here and
    /// ends at or before `end` (a file offset). Anything but [`Frame::Record`] leaves the
    /// reader unusable until [`SegmentReader::jump`]: move it, or drop it.
    pub(super) fn read_record(&mut self, end: u64, payload: &mut Vec<u8>) -> io::Result<Frame> {
        match self.read_frame(end, payload)? {
            (Frame::Record, seq) if self.format == Format::V2 && seq != self.seq => {
                Ok(Frame::Corrupt)
            }
            (Frame::Record, _) => {
                self.offset += (self.format.header_bytes() + payload.len()) as u64;
                self.seq += 1;
                Ok(Frame::Record)
            }
            (frame, _) => Ok(frame),
        }
    }

    /// Reads one frame; for a valid one also the seq it stores (v2; a v1 record stores none:
    /// the reader's own).
    fn read_frame(&mut self, end: u64, payload: &mut Vec<u8>) -> io::Result<(Frame, SpoolSeq)> {
        let header_bytes = self.format.header_bytes();
        let left = end.saturating_sub(self.offset);
        if left == 0 {
            return Ok((Frame::End, 0));
        }
        if left < header_bytes as u64 {
            return Ok((Frame::Torn, 0));
        }
        let mut buffer = [0u8; V2_HEADER_BYTES];
        let header = &mut buffer[..header_bytes];
        if !self.fill(header)? {
            return Ok((Frame::Torn, 0));
        }
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let (length, seq, crc) = match self.format {
            Format::V1 => (word(0), self.seq, word(4)),
            Format::V2 => {
                if header[..4] != FRAME_MARKER {
                    return Ok((Frame::Corrupt, 0));
                }
                (
                    word(4),
                    u64::from(word(8)) | u64::from(word(12)) << 32,
                    word(16),
                )
            }
        };
        if length as usize > MAX_PAYLOAD_BYTES {
            return Ok((Frame::Corrupt, 0));
        }
        if u64::from(length) > left - header_bytes as u64 {
            return Ok((Frame::Torn, 0));
        }
        payload.clear();
        payload.resize(length as usize, 0);
        if !self.fill(payload)? {
            return Ok((Frame::Torn, 0));
        }
        let computed = match self.format {
            Format::V1 => crc32fast::hash(payload),
            Format::V2 => {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&header[4..16]);
                hasher.update(payload);
                hasher.finalize()
            }
        };
        if computed != crc {
            return Ok((Frame::BadCrc { length }, 0));
        }
        Ok((Frame::Record, seq))
    }

    /// Moves the reader to `offset`, where the record of `seq` starts (past a gap).
    pub(super) fn jump(&mut self, offset: u64, seq: SpoolSeq) -> io::Result<()> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|error| with_path("seek in spool segment", &self.path, error))?;
        self.offset = offset;
        self.seq = seq;
        Ok(())
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

/// Finds the first valid v2 record at or after `from` (ending before `end`) whose seq is in
/// `seqs`: its offset and seq. Scans for [`FRAME_MARKER`] through a fixed buffer (memory
/// bounded whatever the file holds) and checks each candidate's frame and checksum.
pub(super) fn find_record(
    path: &Path,
    from: u64,
    end: u64,
    seqs: RangeInclusive<SpoolSeq>,
) -> io::Result<Option<(u64, SpoolSeq)>> {
    let mut file =
        File::open(path).map_err(|error| with_path("open spool segment", path, error))?;
    file.seek(SeekFrom::Start(from))
        .map_err(|error| with_path("seek in spool segment", path, error))?;
    let mut window = vec![0u8; READ_BUFFER_BYTES];
    // Bytes of `window` in use, and the file offset of its first byte.
    let (mut filled, mut start) = (0usize, from);
    let mut payload = Vec::new();
    loop {
        let read = file
            .read(&mut window[filled..])
            .map_err(|error| with_path("read spool segment", path, error))?;
        filled += read;
        // Positions a whole marker can start at; at the end of the file, all of them.
        let scanned = if read == 0 {
            filled
        } else {
            filled.saturating_sub(FRAME_MARKER.len() - 1)
        };
        for at in 0..scanned {
            let offset = start + at as u64;
            if offset >= end {
                return Ok(None);
            }
            if window.get(at..at + FRAME_MARKER.len()) != Some(&FRAME_MARKER[..]) {
                continue;
            }
            let pos = RecordPos {
                segment_first_seq: 0,
                seq: 0,
                offset,
            };
            let mut reader = SegmentReader::open(path.to_path_buf(), Format::V2, pos)?;
            if let (Frame::Record, seq) = reader.read_frame(end, &mut payload)?
                && seqs.contains(&seq)
            {
                return Ok(Some((offset, seq)));
            }
        }
        if read == 0 {
            return Ok(None);
        }
        // Keep the bytes a marker may start in.
        window.copy_within(scanned..filled, 0);
        start += scanned as u64;
        filled -= scanned;
    }
}
