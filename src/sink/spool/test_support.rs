//! sink spool test support: a temp directory per test and small fixed payloads, shared by
//! the spool's tests beside each part.

#![cfg(test)]

use super::*;

/// A directory under the system temp dir, unique per test, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("exflow-spool-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    /// The segment the spool writes (the current format).
    pub(super) fn segment(&self, first_seq: SpoolSeq) -> PathBuf {
        segment_path(&self.0, first_seq, Format::V2)
    }

    /// A segment of the first format (no frame markers), as older versions wrote.
    pub(super) fn v1_segment(&self, first_seq: SpoolSeq) -> PathBuf {
        segment_path(&self.0, first_seq, Format::V1)
    }

    /// Names of the segment files, sorted.
    pub(super) fn segment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(Format::V1.suffix()))
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every payload in these tests is 7 bytes: a record is 20 + 7 = 27 bytes (marker 0..4,
/// length 4..8, seq 8..16, crc 16..20, payload 20..27).
pub(super) const RECORD: u64 = 27;

/// A v1 record (`[length][crc of the payload][payload]`), as older versions wrote.
pub(super) fn v1_record(payload: &[u8]) -> Vec<u8> {
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

pub(super) fn alert(n: u8) -> Vec<u8> {
    vec![b'a', b'l', b'e', b'r', b't', b'-', b'0' + n]
}

pub(super) fn read_all(spool: &mut Spool) -> Vec<(SpoolSeq, Vec<u8>)> {
    let mut out = Vec::new();
    spool.read(0, usize::MAX, &mut out).unwrap();
    out
}

pub(super) fn seqs(entries: &[(SpoolSeq, Vec<u8>)]) -> Vec<SpoolSeq> {
    entries.iter().map(|(seq, _)| *seq).collect()
}

/// Spool of segments holding three 15-byte records each.
pub(super) fn open_small(dir: &TempDir) -> Spool {
    Spool::open_with_segment_bytes(&dir.0, 1 << 20, 3 * RECORD).unwrap()
}

pub(super) fn append_all(spool: &mut Spool, count: u8) {
    for n in 0..count {
        spool.append(&alert(n)).unwrap();
    }
}
