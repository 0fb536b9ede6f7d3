//! sink spool acks: the `acked` file, the durable cursor of acknowledged entries (the prefix
//! below which all are acknowledged and those acknowledged beyond it), replaced atomically.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::Context;
use tracing::warn;

use super::{
    ACKED_FILE, ACKED_FIXED_BYTES, ACKED_MAGIC, ACKED_MAX_BYTES, ACKED_TMP_FILE, MAX_ACKS_AHEAD,
    SpoolCounters, SpoolSeq, sync_dir, with_path,
};

/// Loads the `acked` file: (prefix, acks beyond it). Missing: nothing acknowledged. Corrupt:
/// counted, nothing acknowledged (everything on disk is re-sent).
pub(super) fn load_acked(
    dir: &Path,
    counters: &mut SpoolCounters,
) -> anyhow::Result<(SpoolSeq, Vec<SpoolSeq>)> {
    let path = dir.join(ACKED_FILE);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(file) => {
            file.take(ACKED_MAX_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read spool cursor '{}'", path.display()))?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot open spool cursor '{}'", path.display()));
        }
    }
    match decode_acked(&bytes) {
        Some(acked) => Ok(acked),
        None => {
            counters.corrupt_records += 1;
            warn!(
                path = %path.display(),
                "spool cursor is corrupt; re-sending every entry still in the spool"
            );
            Ok((0, Vec::new()))
        }
    }
}

/// The `acked` file's bytes (see the module doc).
pub(super) fn encode_acked(acked_below: SpoolSeq, acked_ahead: &BTreeSet<SpoolSeq>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ACKED_FIXED_BYTES + 8 * acked_ahead.len());
    bytes.extend_from_slice(&ACKED_MAGIC);
    bytes.extend_from_slice(&acked_below.to_le_bytes());
    // At most MAX_ACKS_AHEAD entries, which fits a u32.
    bytes.extend_from_slice(&(acked_ahead.len() as u32).to_le_bytes());
    for seq in acked_ahead {
        bytes.extend_from_slice(&seq.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

pub(super) fn decode_acked(bytes: &[u8]) -> Option<(SpoolSeq, Vec<SpoolSeq>)> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return None;
    }
    let (magic, rest) = body.split_first_chunk::<8>()?;
    if *magic != ACKED_MAGIC {
        return None;
    }
    let (acked_below, rest) = rest.split_first_chunk::<8>()?;
    let (count, rest) = rest.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize;
    let (seqs, tail) = rest.as_chunks::<8>();
    if count > MAX_ACKS_AHEAD || seqs.len() != count || !tail.is_empty() {
        return None;
    }
    let acked_ahead = seqs.iter().map(|seq| u64::from_le_bytes(*seq)).collect();
    Some((u64::from_le_bytes(*acked_below), acked_ahead))
}

pub(super) fn write_acked_file(
    dir: &Path,
    acked_below: SpoolSeq,
    acked_ahead: &BTreeSet<SpoolSeq>,
) -> io::Result<()> {
    let tmp_path = dir.join(ACKED_TMP_FILE);
    let path = dir.join(ACKED_FILE);
    let bytes = encode_acked(acked_below, acked_ahead);
    File::create(&tmp_path)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_data()
        })
        .map_err(|error| {
            // A full disk: do not leave a partial file taking space.
            let _ = fs::remove_file(&tmp_path);
            with_path("write spool cursor", &tmp_path, error)
        })?;
    fs::rename(&tmp_path, &path)
        .map_err(|error| with_path("replace spool cursor", &path, error))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::sink::spool::test_support::*;

    #[test]
    fn spool_corrupt_acked_file_re_sends_everything() {
        let dir = TempDir::new("corrupt-acked");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 2);
        spool.ack(0);
        spool.close().unwrap();
        fs::write(dir.0.join(ACKED_FILE), b"not a cursor").unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.counters().corrupt_records, 1);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1]);
    }

    #[test]
    fn spool_out_of_order_acks_advance_the_prefix() {
        let dir = TempDir::new("out-of-order");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 5);
        spool.ack(3);
        spool.ack(1);
        spool.ack(2);
        assert_eq!(spool.first_unacked(), Some(0));
        assert_eq!(spool.len(), 2);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 4]);
        spool.ack(0);
        assert_eq!(spool.first_unacked(), Some(4));
        assert_eq!(spool.len(), 1);
        spool.ack(2); // again: ignored
        spool.ack(99); // never appended: ignored
        assert_eq!(spool.counters().acked, 4);
    }

    #[test]
    fn spool_acks_beyond_the_prefix_survive_a_restart() {
        let dir = TempDir::new("ahead-persisted");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 5);
        spool.ack(2);
        spool.ack(3);
        spool.close().unwrap();

        let mut spool = open_small(&dir);
        assert_eq!(spool.len(), 3);
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 4]);
        spool.ack(0);
        spool.ack(1);
        assert_eq!(spool.first_unacked(), Some(4));
    }

    #[test]
    fn spool_forgets_acks_beyond_the_bound_and_counts_them() {
        let dir = TempDir::new("acks-bound");
        let mut spool = Spool::open(&dir.0, u64::MAX).unwrap();
        let entries = MAX_ACKS_AHEAD as u64 + 2;
        for _ in 0..entries {
            spool.append(&alert(0)).unwrap();
        }
        // Everything but seq 0: one ack more than the bound holds.
        for seq in 1..entries {
            spool.ack(seq);
        }
        assert_eq!(spool.counters().acks_forgotten, 1);
        assert_eq!(spool.counters().acked, MAX_ACKS_AHEAD as u64);
        spool.ack(0);
        // The forgotten one is the last entry: still unacknowledged.
        assert_eq!(spool.first_unacked(), Some(entries - 1));
        assert_eq!(spool.len(), 1);
    }

    #[test]
    fn spool_kill_without_commit_re_delivers_acked_entries() {
        let dir = TempDir::new("kill");
        let mut spool = open_small(&dir);
        append_all(&mut spool, 4);
        spool.sync().unwrap();
        assert_eq!(seqs(&read_all(&mut spool)), vec![0, 1, 2, 3]);
        spool.ack(0);
        spool.ack(1);
        spool.commit_acks().unwrap();
        // Delivered and acknowledged, but the process dies before commit_acks.
        spool.ack(2);
        spool.ack(3);
        assert!(spool.is_empty());
        drop(spool); // like kill -9: no sync, no commit

        let mut spool = open_small(&dir);
        // 2 and 3 are sent again (the only duplicates the spool produces); nothing is lost.
        assert_eq!(read_all(&mut spool), vec![(2, alert(2)), (3, alert(3))]);
        assert_eq!(spool.append(&alert(4)).unwrap(), 4);
    }
}
