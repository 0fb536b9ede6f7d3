//! sink spool recovery: at open, lists the segment files and reads and checks every record
//! of each (see the module doc of `spool` for the rules): steps over damaged records to the
//! next valid one (by its frame marker in a v2 segment), and cuts a torn or corrupt tail off
//! the last segment.

use std::fs::{self, OpenOptions};
use std::path::Path;

use anyhow::Context;
use tracing::warn;

use super::segment::{Format, Frame, Gap, RecordPos, Segment, SegmentReader, find_record};
use super::{SEGMENT_NAME_DIGITS, SpoolCounters, SpoolSeq, segment_path};

/// The segment files in `dir`, as (first seq, format), sorted.
pub(super) fn list_segments(dir: &Path) -> anyhow::Result<Vec<(SpoolSeq, Format)>> {
    let entries = fs::read_dir(dir)
        .with_context(|| format!("cannot list spool directory '{}'", dir.display()))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot list spool directory '{}'", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // The longer suffix first: a v2 name ends in the v1 suffix too.
        let parsed = [Format::V2, Format::V1].into_iter().find_map(|format| {
            let stem = name.strip_suffix(format.suffix())?;
            (stem.len() == SEGMENT_NAME_DIGITS && stem.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| stem.parse::<SpoolSeq>().ok())
                .flatten()
                .map(|first_seq| (first_seq, format))
        });
        match parsed {
            Some(segment) => segments.push(segment),
            None if name.ends_with(Format::V1.suffix()) => warn!(
                path = %entry.path().display(),
                "ignoring a file in the spool directory that is not named like a segment"
            ),
            None => {}
        }
    }
    // A v1 and a v2 file with the same first seq (an empty v1 segment left when the format
    // changed): the v1 one first, and it can hold no record.
    segments.sort_unstable();
    Ok(segments)
}

/// Seqs a segment may lose to damage and still be read on; more ends the segment there
/// (bounds memory whatever the file holds).
const MAX_DAMAGED_PER_SEGMENT: u64 = 1024;

/// Reads and checks every record of one segment. A damaged record is stepped over when a valid
/// record follows (v2: the next frame marker with a valid frame and a plausible seq; v1: only
/// when the damage is in the payload and its length leads to a valid record); anything else
/// bad ends the segment (and is cut off the last segment).
pub(super) fn recover_segment(
    dir: &Path,
    first_seq: SpoolSeq,
    format: Format,
    next_first_seq: Option<SpoolSeq>,
    counters: &mut SpoolCounters,
) -> anyhow::Result<Segment> {
    let path = segment_path(dir, first_seq, format);
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
    let mut reader = SegmentReader::open(path.clone(), format, start)?;
    let mut payload = Vec::new();
    let mut gaps = Vec::new();
    let mut lost = 0u64;
    let frame = loop {
        if reader.seq - first_seq >= max_records {
            break if reader.offset < file_bytes {
                Frame::Corrupt
            } else {
                Frame::End
            };
        }
        let frame = match reader.read_record(file_bytes, &mut payload)? {
            Frame::Record => continue,
            Frame::End => break Frame::End,
            frame => frame,
        };
        let budget = MAX_DAMAGED_PER_SEGMENT.saturating_sub(lost);
        let resume = match (format, frame) {
            (Format::V2, _) if budget > 0 => {
                // The last seq this segment may hold, and the most seqs one gap may lose.
                let last = first_seq + (max_records - 1).min(SpoolSeq::MAX - 1 - first_seq);
                let seqs = reader.seq..=last.min(reader.seq.saturating_add(budget));
                find_record(&path, reader.offset + 1, file_bytes, seqs)?
            }
            // Only the payload is damaged when the frame's length leads to a valid record (or
            // the end of the file): that record alone is lost, the ones after it are kept.
            (Format::V1, Frame::BadCrc { length }) if budget > 0 => {
                let next = reader.offset + 8 + u64::from(length);
                v1_frame_follows(&path, next, file_bytes)?.then_some((next, reader.seq + 1))
            }
            _ => None,
        };
        let Some((resume_offset, resume_seq)) = resume else {
            break frame;
        };
        counters.corrupt_records += 1;
        warn!(
            path = %path.display(),
            offset = reader.offset,
            seq = reader.seq,
            lost_entries = resume_seq - reader.seq,
            next_valid_offset = resume_offset,
            "damaged spool record; reading on at the next valid one"
        );
        gaps.push(Gap {
            offset: reader.offset,
            seq: reader.seq,
            resume_offset,
            resume_seq,
        });
        lost += resume_seq - reader.seq;
        reader.jump(resume_offset, resume_seq)?;
    };
    let (records, bytes) = (reader.seq - first_seq, reader.offset);
    let segment = |sealed| Segment {
        first_seq,
        format,
        records,
        bytes,
        sealed,
        gaps,
    };
    if frame == Frame::End {
        return Ok(segment(false));
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
        return Ok(segment(true));
    }
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| {
            file.set_len(bytes)?;
            file.sync_data()
        })
        .with_context(|| format!("cannot truncate spool segment '{}'", path.display()))?;
    Ok(segment(false))
}

/// Whether a valid v1 record starts at `offset` of the segment (or `offset` is its end).
fn v1_frame_follows(path: &Path, offset: u64, file_bytes: u64) -> anyhow::Result<bool> {
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
    let mut reader = SegmentReader::open(path.to_path_buf(), Format::V1, start)?;
    Ok(reader.read_record(file_bytes, &mut Vec::new())? == Frame::Record)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::sink::spool::acks::encode_acked;
    use crate::sink::spool::segment::FRAME_MARKER;
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
            vec![
                "00000000000000000000.v2.spool",
                "00000000000000000003.v2.spool"
            ]
        );

        // Flip the first payload byte of seq 1 (offset 27 + 20 in segment 0).
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 20) as usize] ^= 0xff;
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
        // Flip the crc of seq 4 (offset 27 + 16 in segment 3).
        let path = dir.segment(3);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 16) as usize] ^= 0x01;
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
    fn spool_flipped_length_costs_that_record_only() {
        let dir = TempDir::new("corrupt-length");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 6);
        spool.sync().unwrap();
        drop(spool);
        // A length of 7 + 64 for seq 1 (offset 27 + 4): its frame runs past the segment's end.
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[(RECORD + 4) as usize] ^= 0x40;
        fs::write(&path, &bytes).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        // The frame marker of seq 2 is found: only seq 1 is lost.
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 2, 3, 4, 5]);
        assert_eq!(spool.len(), 5);
        spool.ack(0);
        assert_eq!(spool.first_unacked(), Some(2));
    }

    #[test]
    fn spool_damaged_lengths_in_the_last_segment_keep_the_records_after_them() {
        let dir = TempDir::new("corrupt-length-last");
        // One segment of 20 records: seq 7 gets a length far past the payload limit, seq 12
        // one a byte short (its frame ends inside itself).
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        for n in 0..20 {
            spool.append(&alert(n)).unwrap();
        }
        spool.sync().unwrap();
        drop(spool);
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        let length_of = |seq: u64| (seq * RECORD + 4) as usize;
        bytes[length_of(7)..length_of(7) + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        bytes[length_of(12)] = 6;
        fs::write(&path, &bytes).unwrap();

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().corrupt_records, 2);
        assert_eq!(spool.counters().torn_tails, 0);
        // Nothing is cut off the file: the damage is not a torn tail.
        assert_eq!(fs::metadata(&path).unwrap().len(), 20 * RECORD);
        let expected: Vec<SpoolSeq> = (0..20).filter(|seq| ![7, 12].contains(seq)).collect();
        let entries = read_all(&mut spool);
        assert_eq!(seqs(&entries), expected);
        assert!(entries.iter().all(|(seq, p)| *p == alert(*seq as u8)));
        // New entries go on after the last one; reopened, the same records are kept.
        assert_eq!(spool.append(&alert(20)).unwrap(), 20);
        spool.close().unwrap();
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(seqs(&read_all(&mut spool)).len(), expected.len() + 1);
    }

    #[test]
    fn spool_resync_skips_a_frame_marker_inside_a_payload() {
        let dir = TempDir::new("marker-in-payload");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        // seq 1's payload holds a frame marker followed by garbage, like a record's start.
        let tricky = [
            &FRAME_MARKER[..],
            &[7, 0, 0, 0],
            &[2, 0, 0, 0, 0, 0, 0, 0],
            b"garbage!",
        ]
        .concat();
        spool.append(&alert(0)).unwrap();
        spool.append(&tricky).unwrap();
        spool.append(&alert(2)).unwrap();
        spool.sync().unwrap();
        drop(spool);
        // Damage seq 1's own marker: the scan meets the fake one in its payload first.
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[RECORD as usize] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(read_all(&mut spool), vec![(0, alert(0)), (2, alert(2))]);
    }

    #[test]
    fn spool_resync_finds_a_marker_across_the_scan_buffer_boundary() {
        let dir = TempDir::new("marker-boundary");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        // The scan after seq 0's damaged marker starts at offset 1 and reads 64 KiB at a
        // time: seq 1's marker at 65,535 spans bytes 65,535..65,539, across the first read.
        let big = vec![b'x'; 65_535 - 20];
        spool.append(&big).unwrap();
        spool.append(&alert(1)).unwrap();
        spool.append(&alert(2)).unwrap();
        spool.sync().unwrap();
        drop(spool);
        let path = dir.segment(0);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[65_535..65_539], FRAME_MARKER);
        bytes[0] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(read_all(&mut spool), vec![(1, alert(1)), (2, alert(2))]);
    }

    #[test]
    fn spool_reads_v1_segments_and_appends_in_v2() {
        let dir = TempDir::new("v1");
        fs::create_dir_all(&dir.0).unwrap();
        let v1 = |range: std::ops::Range<u8>| {
            range
                .flat_map(|n| v1_record(&alert(n)))
                .collect::<Vec<u8>>()
        };
        fs::write(dir.v1_segment(0), v1(0..3)).unwrap();
        fs::write(dir.v1_segment(3), v1(3..6)).unwrap();
        fs::write(dir.v1_segment(6), v1(6..8)).unwrap();
        // A damaged length in a v1 segment (no frame marker) costs the rest of it: seq 1, 2.
        let path = dir.v1_segment(0);
        let mut bytes = fs::read(&path).unwrap();
        bytes[15] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        // A flipped payload byte in a v1 segment, its frame whole, costs that record: seq 4.
        let path = dir.v1_segment(3);
        let mut bytes = fs::read(&path).unwrap();
        bytes[15 + 8] ^= 0xff;
        fs::write(&path, &bytes).unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 2);
        let entries = read_all(&mut spool);
        assert_eq!(seqs(&entries), vec![0, 3, 5, 6, 7]);
        assert!(entries.iter().all(|(seq, p)| *p == alert(*seq as u8)));
        // Appends never go to a v1 segment: the next seq starts a v2 one.
        assert_eq!(spool.append(&alert(8)).unwrap(), 8);
        spool.close().unwrap();
        assert_eq!(
            dir.segment_names().last().map(String::as_str),
            Some("00000000000000000008.v2.spool")
        );
        let mut spool = open_small(&dir);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 3, 5, 6, 7, 8]);
        for seq in [0, 3, 5, 6, 7, 8] {
            spool.ack(seq);
        }
        spool.commit_acks().unwrap();
        assert!(spool.is_empty());
        assert_eq!(dir.segment_names(), Vec::<String>::new());
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
            dir.v1_segment(0),
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
        fs::write(dir.v1_segment(10), &noise).unwrap();
        // A length that runs past the end of a non-last segment.
        fs::write(dir.v1_segment(20), [200, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        fs::write(dir.v1_segment(30), &noise).unwrap();
        // The same noise as the last segment, in the current format (frame markers).
        fs::write(dir.segment(35), &noise).unwrap();
        fs::write(dir.0.join("00000000000000000040.spool.bak"), &noise).unwrap();
        fs::write(dir.0.join("garbage.spool"), &noise).unwrap();

        let mut spool = open_small(&dir);
        let counters = spool.counters();
        assert_eq!(counters.torn_tails + counters.corrupt_records, 5);
        assert!(spool.is_empty());
        assert_eq!(read_all(&mut spool), Vec::new());
        let seq = spool.append(&alert(0)).unwrap();
        assert_eq!(seq, 35);
        assert_eq!(read_all(&mut spool), vec![(35, alert(0))]);
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
        assert_eq!(dir.segment_names(), vec!["00000000000000000003.v2.spool"]);
        assert_eq!(seqs(&read_all(&mut spool)), vec![3, 4, 5]);
        assert_eq!(spool.bytes(), 3 * RECORD);
    }

    #[test]
    fn spool_seqs_near_the_end_of_u64_never_overflow() {
        let dir = TempDir::new("seq-max");
        fs::create_dir_all(&dir.0).unwrap();
        let record = v1_record(&alert(0));
        // Room for one seq (u64::MAX - 1) only: the second record is past the end of the seqs.
        let first_seq = SpoolSeq::MAX - 1;
        fs::write(dir.v1_segment(first_seq), [record.clone(), record].concat()).unwrap();

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
