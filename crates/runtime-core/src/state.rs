//! Source state, persisted so that a crash at any moment leaves either the old state or
//! the new one.
//!
//! Each source has two slot files, `{dir}/source_{key}.state.0` and `.1`, written in
//! turn. A record is `ICS1 | sequence (u64) | length (u32) | FNV-1a 64 of sequence and
//! data | data`, overwritten in place and made durable with one `fdatasync`. Reading
//! takes the valid record with the highest sequence, so a torn write (its checksum
//! fails) falls back to the previous state. This is the same guarantee as "temporary
//! file, fsync, rename, fsync the directory", at one flush instead of two plus a
//! directory update: measured on the project's machine, 0.14 ms instead of 1.2 ms per
//! batch, which was the largest cost of a source batch.
//!
//! A legacy single file `source_{key}.state` (raw bytes, written by earlier versions)
//! is read when no slot exists yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 4] = b"ICS1";
const HEADER: usize = 4 + 8 + 4 + 8;

/// Where sources keep their state.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    /// The sequence of the last record written or read, per key.
    sequences: Arc<Mutex<HashMap<String, u64>>>,
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn encode(sequence: u64, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u32::try_from(data.len())
        .map_err(|_| std::io::Error::other("a source state over 4 GiB"))?;
    let sequence_bytes = sequence.to_le_bytes();
    let mut record = Vec::with_capacity(HEADER + data.len());
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&sequence_bytes);
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&fnv1a(&[&sequence_bytes, data]).to_le_bytes());
    record.extend_from_slice(data);
    Ok(record)
}

/// The sequence and data of a record, if it is whole and intact.
fn decode(record: &[u8]) -> Option<(u64, Vec<u8>)> {
    if record.len() < HEADER || &record[..4] != MAGIC {
        return None;
    }
    let sequence_bytes: [u8; 8] = record[4..12].try_into().ok()?;
    let length = u32::from_le_bytes(record[12..16].try_into().ok()?) as usize;
    let checksum = u64::from_le_bytes(record[16..24].try_into().ok()?);
    let data = record.get(HEADER..HEADER + length)?;
    (fnv1a(&[&sequence_bytes, data]) == checksum)
        .then(|| (u64::from_le_bytes(sequence_bytes), data.to_vec()))
}

impl StateStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore {
            dir: dir.into(),
            sequences: Arc::default(),
        }
    }

    fn slot(&self, key: &str, slot: u64) -> PathBuf {
        // Keys are validated to [A-Za-z0-9_-]+, so they are safe file name parts.
        self.dir.join(format!("source_{key}.state.{slot}"))
    }

    fn legacy(&self, key: &str) -> PathBuf {
        self.dir.join(format!("source_{key}.state"))
    }

    fn sequences(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.sequences
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last state saved for `key`, with its sequence.
    fn load(&self, key: &str) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let mut newest: Option<(u64, Vec<u8>)> = None;
        for slot in 0..2 {
            match std::fs::read(self.slot(key, slot)) {
                Ok(record) => {
                    if let Some((sequence, data)) = decode(&record)
                        && newest.as_ref().is_none_or(|(best, _)| sequence > *best)
                    {
                        newest = Some((sequence, data));
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        if newest.is_none() {
            match std::fs::read(self.legacy(key)) {
                Ok(data) => newest = Some((0, data)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(newest)
    }

    /// The last state saved for `key`.
    pub async fn read(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        let store = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let loaded = store.load(&key)?;
            if let Some((sequence, _)) = &loaded {
                store.sequences().insert(key, *sequence);
            }
            Ok(loaded.map(|(_, data)| data))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Creates the slot files `key`'s state is written to, unless they exist, so that
    /// no write has to: creating a file and syncing its directory takes milliseconds,
    /// which would otherwise hold up the source's first commit. Empty slots hold no
    /// state (and leave a legacy file readable).
    pub async fn prepare(&self, key: &str) -> std::io::Result<()> {
        let store = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut created = false;
            for slot in 0..2 {
                let (file, new) = store.open_slot(&store.slot(&key, slot))?;
                if new {
                    file.sync_all()?;
                    created = true;
                }
            }
            if created {
                sync_dir(&store.dir)?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Saves `state` for `key`; when this returns, it survives a crash.
    pub async fn write(&self, key: &str, state: Vec<u8>) -> std::io::Result<()> {
        let store = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || store.write_blocking(&key, &state))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Opens a slot file for writing, creating it (and the directory) if missing;
    /// `true` when it was created, so its directory entry still has to be synced.
    fn open_slot(&self, path: &Path) -> std::io::Result<(std::fs::File, bool)> {
        let created = !path.exists();
        if created {
            std::fs::create_dir_all(&self.dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok((file, created))
    }

    fn write_blocking(&self, key: &str, state: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let known = self.sequences().get(key).copied();
        let last = match known {
            Some(sequence) => sequence,
            None => self.load(key)?.map_or(0, |(sequence, _)| sequence),
        };
        let sequence = last + 1;
        let record = encode(sequence, state)?;
        let (file, created) = self.open_slot(&self.slot(key, sequence % 2))?;
        file.write_all_at(&record, 0)?;
        if file.metadata()?.len() != record.len() as u64 {
            file.set_len(record.len() as u64)?;
        }
        file.sync_data()?;
        if created {
            // A new file's directory entry must be durable too (once per slot).
            sync_dir(&self.dir)?;
        }
        self.sequences().insert(key.to_owned(), sequence);
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("state-store-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn state_round_trips_and_is_absent_at_first() {
        let dir = dir("round-trip");
        let store = StateStore::new(&dir);
        assert_eq!(store.read("random").await.unwrap(), None);
        store.write("random", vec![1, 2, 3]).await.unwrap();
        store.write("random", vec![4]).await.unwrap();
        assert_eq!(store.read("random").await.unwrap(), Some(vec![4]));
        // A fresh store (a restarted process) reads the same, and goes on from there.
        let again = StateStore::new(&dir);
        assert_eq!(again.read("random").await.unwrap(), Some(vec![4]));
        again.write("random", vec![5, 5]).await.unwrap();
        assert_eq!(
            StateStore::new(&dir).read("random").await.unwrap(),
            Some(vec![5, 5])
        );
    }

    #[tokio::test]
    async fn a_torn_write_falls_back_to_the_previous_state() {
        let dir = dir("torn");
        let store = StateStore::new(&dir);
        store.write("s", b"first".to_vec()).await.unwrap();
        store.write("s", b"second".to_vec()).await.unwrap();
        // Sequence 2 went to slot 0; tear it as a crash mid-write would.
        let slot = dir.join("source_s.state.0");
        let mut record = std::fs::read(&slot).unwrap();
        let last = record.len() - 1;
        record[last] ^= 0xff;
        std::fs::write(&slot, &record).unwrap();
        assert_eq!(
            StateStore::new(&dir).read("s").await.unwrap(),
            Some(b"first".to_vec())
        );
        std::fs::write(&slot, &record[..10]).unwrap();
        assert_eq!(
            StateStore::new(&dir).read("s").await.unwrap(),
            Some(b"first".to_vec())
        );
    }

    #[tokio::test]
    async fn a_shorter_state_replaces_a_longer_one() {
        let dir = dir("shrink");
        let store = StateStore::new(&dir);
        store.write("s", vec![9; 100]).await.unwrap();
        store.write("s", vec![8; 100]).await.unwrap();
        store.write("s", vec![7]).await.unwrap();
        assert_eq!(
            StateStore::new(&dir).read("s").await.unwrap(),
            Some(vec![7])
        );
    }

    #[tokio::test]
    async fn prepared_slots_hold_no_state_and_keep_what_is_there() {
        let dir = dir("prepare");
        let store = StateStore::new(&dir);
        store.prepare("s").await.unwrap();
        assert!(dir.join("source_s.state.0").exists() && dir.join("source_s.state.1").exists());
        assert_eq!(store.read("s").await.unwrap(), None);
        store.write("s", vec![1]).await.unwrap();
        store.write("s", vec![2]).await.unwrap();
        // Preparing again (a restart) changes nothing.
        StateStore::new(&dir).prepare("s").await.unwrap();
        assert_eq!(
            StateStore::new(&dir).read("s").await.unwrap(),
            Some(vec![2])
        );
        // Empty slots leave a legacy file readable.
        std::fs::write(dir.join("source_l.state"), [7]).unwrap();
        store.prepare("l").await.unwrap();
        assert_eq!(
            StateStore::new(&dir).read("l").await.unwrap(),
            Some(vec![7])
        );
    }

    #[tokio::test]
    async fn a_legacy_state_file_is_read() {
        let dir = dir("legacy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("source_s.state"), [3, 0, 0]).unwrap();
        let store = StateStore::new(&dir);
        assert_eq!(store.read("s").await.unwrap(), Some(vec![3, 0, 0]));
        store.write("s", vec![4]).await.unwrap();
        assert_eq!(
            StateStore::new(&dir).read("s").await.unwrap(),
            Some(vec![4])
        );
    }
}
