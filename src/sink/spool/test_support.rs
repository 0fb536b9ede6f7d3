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

    pub(super) fn segment(&self, first_seq: SpoolSeq) -> PathBuf {
        segment_path(&self.0, first_seq)
    }

    /// Names of the segment files, sorted.
    pub(super) fn segment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(SEGMENT_SUFFIX))
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

/// Every payload in these tests is 7 bytes: a record is 8 + 7 = 15 bytes.
pub(super) const RECORD: u64 = 15;

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
