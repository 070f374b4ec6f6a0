//! Source state files: `{dir}/source_{key}.state`, written atomically.

use std::path::{Path, PathBuf};

/// Where sources keep their state.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys are validated to [A-Za-z0-9_-]+, so they are safe file name parts.
        self.dir.join(format!("source_{key}.state"))
    }

    /// The last state saved for `key`.
    pub async fn read(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Saves `state` for `key`: temporary file, fsync, rename, fsync of the directory,
    /// so a crash leaves either the old state or the new one.
    pub async fn write(&self, key: &str, state: Vec<u8>) -> std::io::Result<()> {
        let path = self.path(key);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &path, &state))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension("state.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_round_trips_and_is_absent_at_first() {
        let dir = std::env::temp_dir().join(format!("state-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = StateStore::new(&dir);
        assert_eq!(store.read("random").await.unwrap(), None);
        store.write("random", vec![1, 2, 3]).await.unwrap();
        store.write("random", vec![4]).await.unwrap();
        assert_eq!(store.read("random").await.unwrap(), Some(vec![4]));
        assert!(dir.join("source_random.state").is_file());
        assert!(!dir.join("source_random.state.tmp").exists());
    }
}
