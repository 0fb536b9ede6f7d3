//! sink spool recovery: at open, lists the segment files and reads and checks every record
//! of each (see the module doc of `spool` for the rules), cutting a torn or corrupt tail off
//! the last segment.

use std::fs::{self, OpenOptions};
use std::path::Path;

use anyhow::Context;
use tracing::warn;

use super::segment::{Frame, RecordPos, Segment, SegmentReader};
use super::{
    HEADER_BYTES, SEGMENT_NAME_DIGITS, SEGMENT_SUFFIX, SpoolCounters, SpoolSeq, segment_path,
};

/// First seqs of the segment files in `dir`, sorted.
pub(super) fn list_segments(dir: &Path) -> anyhow::Result<Vec<SpoolSeq>> {
    let entries = fs::read_dir(dir)
        .with_context(|| format!("cannot list spool directory '{}'", dir.display()))?;
    let mut first_seqs = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot list spool directory '{}'", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
        else {
            continue;
        };
        let first_seq = (stem.len() == SEGMENT_NAME_DIGITS
            && stem.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| stem.parse::<SpoolSeq>().ok())
        .flatten();
        match first_seq {
            Some(first_seq) => first_seqs.push(first_seq),
            None => warn!(
                path = %entry.path().display(),
                "ignoring a file in the spool directory that is not named like a segment"
            ),
        }
    }
    first_seqs.sort_unstable();
    Ok(first_seqs)
}

/// Damaged records a segment may skip over; one more ends the segment there (bounds memory
/// whatever the file holds).
const MAX_DAMAGED_PER_SEGMENT: usize = 1024;

/// Reads and checks every record of one segment: a record whose payload fails its checksum
/// inside a whole frame is skipped; anything else bad ends the segment (and is cut off the
/// last segment).
pub(super) fn recover_segment(
    dir: &Path,
    first_seq: SpoolSeq,
    next_first_seq: Option<SpoolSeq>,
    counters: &mut SpoolCounters,
) -> anyhow::Result<Segment> {
    let path = segment_path(dir, first_seq);
    let file_bytes = fs::metadata(&path)
        .with_context(|| format!("cannot stat spool segment '{}'", path.display()))?
        .len();
    let is_last = next_first_seq.is_none();
    // Seqs at or past the next segment's first one belong to it; none can pass u64::MAX.
    let max_records = next_first_seq
        .unwrap_or(SpoolSeq::MAX)
        .saturating_sub(first_seq);
    let start = RecordPos {
        segment_first_seq: first_seq,
        seq: first_seq,
        offset: 0,
    };
    let mut reader = SegmentReader::open(path.clone(), start)?;
    let mut payload = Vec::new();
    let mut damaged = Vec::new();
    let frame = loop {
        if reader.seq - first_seq >= max_records {
            break if reader.offset < file_bytes {
                Frame::Corrupt
            } else {
                Frame::End
            };
        }
        match reader.read_record(file_bytes, &mut payload)? {
            Frame::Record => {}
            // Only the payload is damaged when the frame's length leads to a valid record (or
            // the end of the file): that record alone is lost, the ones after it are kept.
            Frame::BadCrc { length }
                if damaged.len() < MAX_DAMAGED_PER_SEGMENT
                    && frame_follows(
                        &path,
                        reader.offset + HEADER_BYTES as u64 + u64::from(length),
                        file_bytes,
                    )? =>
            {
                counters.corrupt_records += 1;
                warn!(
                    path = %path.display(),
                    offset = reader.offset,
                    seq = reader.seq,
                    "spool record fails its checksum; skipping it, the records after it are kept"
                );
                damaged.push(reader.seq);
                reader.skip_damaged(length);
            }
            frame => break frame,
        }
    };
    let (records, bytes) = (reader.seq - first_seq, reader.offset);
    if frame == Frame::End {
        return Ok(Segment {
            first_seq,
            records,
            bytes,
            sealed: false,
            damaged,
        });
    }
    if is_last && frame == Frame::Torn {
        counters.torn_tails += 1;
    } else {
        counters.corrupt_records += 1;
    }
    warn!(
        path = %path.display(),
        offset = bytes,
        ignored_bytes = file_bytes - bytes,
        valid_records = records,
        "spool segment has a {} record; {}",
        if frame == Frame::Torn { "torn" } else { "corrupt" },
        if is_last { "cutting it off" } else { "ignoring the rest of the segment" }
    );
    if !is_last {
        return Ok(Segment {
            first_seq,
            records,
            bytes,
            sealed: true,
            damaged,
        });
    }
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| {
            file.set_len(bytes)?;
            file.sync_data()
        })
        .with_context(|| format!("cannot truncate spool segment '{}'", path.display()))?;
    Ok(Segment {
        first_seq,
        records,
        bytes,
        sealed: false,
        damaged,
    })
}

/// Whether a valid record starts at `offset` of the segment (or `offset` is its end).
fn frame_follows(path: &Path, offset: u64, file_bytes: u64) -> anyhow::Result<bool> {
    if offset == file_bytes {
        return Ok(true);
    }
    if offset > file_bytes {
        return Ok(false);
    }
    let start = RecordPos {
        segment_first_seq: 0,
        seq: 0,
        offset,
    };
    let mut reader = SegmentReader::open(path.to_path_buf(), start)?;
    Ok(reader.read_record(file_bytes, &mut Vec::new())? == Frame::Record)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::sink::spool::acks::encode_acked;
    use crate::sink::spool::test_support::*;

    #[test]
    fn spool_torn_tail_is_cut_and_counted() {
        let dir = TempDir::new("torn");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        append_all(&mut spool, 3);
        spool.sync().unwrap();
        drop(spool);

        let torn_record = [
            100, 0, 0, 0, // length: 100 bytes
            0x12, 0x34, 0x56, 0x78, // crc
            b'x', b'y', // 2 of the 100 payload bytes: the write was cut short
        ];
        let path = dir.segment(0);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn_record).unwrap();
        drop(file);
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * RECORD + 10);

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().torn_tails, 1);
        assert_eq!(spool.counters().corrupt_records, 0);
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * RECORD);
        assert_eq!(
            read_all(&mut spool),
            vec![(0, alert(0)), (1, alert(1)), (2, alert(2))]
        );
        assert_eq!(spool.append(&alert(3)).unwrap(), 3);
        spool.sync().unwrap();
        drop(spool);

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().torn_tails, 0);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 2, 3]);
    }

    #[test]
    fn spool_torn_header_is_cut_and_counted() {
        let dir = TempDir::new("torn-header");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        append_all(&mut spool, 2);
        spool.sync().unwrap();
        drop(spool);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.segment(0))
            .unwrap();
        file.write_all(&[7, 0, 0]).unwrap(); // 3 of the 8 header bytes
        drop(file);

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().torn_tails, 1);
        assert_eq!(fs::metadata(dir.segment(0)).unwrap().len(), 2 * RECORD);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1]);
    }

    #[test]
    fn spool_flipped_payload_byte_costs_that_record_only() {
        let dir = TempDir::new("corrupt-middle");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        assert_eq!(
            dir.segment_names(),
            vec!["00000000000000000000.spool", "00000000000000000003.spool"]
        );

        // Flip the first payload byte of seq 1 (offset 15 + 8 in segment 0).
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 8) as usize] ^= 0xff;
        fs::write(&path, &bytes).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(spool.counters().torn_tails, 0);
        // The file is left as it is on disk.
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * RECORD);
        assert_eq!(spool.len(), 5);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 2, 3, 4, 5]);
        // The lost seq 1 does not hold up the acknowledged prefix.
        spool.ack(0);
        assert_eq!(spool.first_unacked(), Some(2));
        for seq in 2..6 {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert!(spool.is_empty());
        assert_eq!(dir.segment_names(), Vec::<String>::new());
        assert_eq!(spool.append(&alert(6)).unwrap(), 6);
    }

    #[test]
    fn spool_flipped_crc_in_the_last_segment_costs_that_record_only() {
        let dir = TempDir::new("corrupt-last");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        // Flip the crc of seq 4 (offset 15 + 4 in segment 3).
        let path = dir.segment(3);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 4) as usize] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(spool.counters().torn_tails, 0);
        assert_eq!(fs::metadata(&path).unwrap().len(), 3 * RECORD);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 2, 3, 5]);
        assert_eq!(spool.len(), 5);
        assert_eq!(spool.append(&alert(9)).unwrap(), 6);
        spool.sync().unwrap();
        drop(spool);
        // Reopened: the same record is skipped again, the new one is there.
        let mut spool = open_small(&dir);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 2, 3, 5, 6]);
    }

    #[test]
    fn spool_flipped_length_ends_the_segment_there() {
        let dir = TempDir::new("corrupt-length");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        // A length of 7 + 64 for seq 1: the frame it describes does not end on a record.
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[RECORD as usize] ^= 0x40;
        fs::write(&path, &bytes).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 3, 4, 5]);
    }

    #[test]
    fn spool_truncated_segments_keep_their_whole_records() {
        let dir = TempDir::new("truncated");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        // An earlier segment cut mid-record (not a crash artefact: counted corrupt) and the
        // last one cut mid-header (torn).
        let first = fs::read(dir.segment(0)).unwrap();
        fs::write(dir.segment(0), &first[..(2 * RECORD + 5) as usize]).unwrap();
        let last = fs::read(dir.segment(3)).unwrap();
        fs::write(dir.segment(3), &last[..(2 * RECORD + 3) as usize]).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(spool.counters().torn_tails, 1);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 3, 4]);
        assert_eq!(spool.append(&alert(9)).unwrap(), 5);
    }

    #[test]
    fn spool_garbage_segments_never_panic() {
        let dir = TempDir::new("garbage");
        fs::create_dir_all(&dir.0).unwrap();
        // A length field far past MAX_PAYLOAD_BYTES: rejected without allocating it.
        fs::write(
            dir.segment(0),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3],
        )
        .unwrap();
        // Pseudo-random bytes (a fixed linear congruential sequence).
        let mut state: u32 = 12345;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            })
            .collect();
        fs::write(dir.segment(10), &noise).unwrap();
        // A length that runs past the end of a non-last segment.
        fs::write(dir.segment(20), [200, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        fs::write(dir.segment(30), &noise).unwrap();
        fs::write(dir.0.join("00000000000000000040.spool.bak"), &noise).unwrap();
        fs::write(dir.0.join("garbage.spool"), &noise).unwrap();

        let mut spool = open_small(&dir);
        let counters = spool.counters();
        assert_eq!(counters.torn_tails + counters.corrupt_records, 4);
        assert!(spool.is_empty());
        assert_eq!(read_all(&mut spool), Vec::new());
        let seq = spool.append(&alert(0)).unwrap();
        assert_eq!(seq, 30);
        assert_eq!(read_all(&mut spool), vec![(30, alert(0))]);
    }

    #[test]
    fn spool_deletes_acked_segments_left_by_a_crash() {
        let dir = TempDir::new("acked-left");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        // The cursor was replaced but the process died before deleting segment 0.
        let cursor = encode_acked(3, &BTreeSet::new());
        fs::write(dir.0.join(ACKED_FILE), cursor).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(dir.segment_names(), vec!["00000000000000000003.spool"]);
        assert_eq!(seqs(&read_all(&mut spool)), vec![3, 4, 5]);
        assert_eq!(spool.bytes(), 3 * RECORD);
    }

    #[test]
    fn spool_seqs_near_the_end_of_u64_never_overflow() {
        let dir = TempDir::new("seq-max");
        fs::create_dir_all(&dir.0).unwrap();
        let crc = crc32fast::hash(&alert(0)).to_le_bytes();
        let mut record = vec![7, 0, 0, 0]; // length
        record.extend_from_slice(&crc); // crc
        record.extend_from_slice(&alert(0)); // payload
        // Room for one seq (u64::MAX - 1) only: the second record is past the end of the seqs.
        let first_seq = SpoolSeq::MAX - 1;
        fs::write(dir.segment(first_seq), [record.clone(), record].concat()).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(read_all(&mut spool), vec![(first_seq, alert(0))]);
        assert_eq!(spool.next_seq(), SpoolSeq::MAX);
        let error = spool.append(&alert(1)).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("has used up its sequence numbers"),
            "{error}"
        );
        spool.ack(first_seq);
        assert!(spool.is_empty());
    }
}
