//! Keeping the per-run artifact caches (built initramfs archives, stripped
//! test binaries) bounded: least recently used files go first once a
//! directory exceeds its byte budget. A file used in the last few minutes
//! is never removed, so a concurrent run never loses the archive it is
//! about to boot.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Default budget per cache directory, MiB (`KTSTR_ARTIFACT_CACHE_MB`).
pub const DEFAULT_BUDGET_MB: u64 = 1024;
/// Files used more recently than this are kept whatever the budget.
pub const MIN_AGE: Duration = Duration::from_secs(600);

/// The budget from `KTSTR_ARTIFACT_CACHE_MB`, else the default.
pub fn budget_bytes() -> u64 {
    std::env::var("KTSTR_ARTIFACT_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_BUDGET_MB)
        .saturating_mul(1 << 20)
}

/// Mark `path` used now (its mtime is the LRU clock).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// What a prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

/// Remove the least recently used regular files of `dir` until its total
/// is at most `budget` bytes, sparing files younger than `min_age`.
pub fn prune(dir: &Path, budget: u64, min_age: Duration) -> Pruned {
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            md.is_file()
                .then(|| (md.modified().unwrap_or(now), md.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    let mut out = Pruned::default();
    for (mtime, len, path) in files {
        if total <= budget {
            break;
        }
        if now.duration_since(mtime).unwrap_or_default() < min_age {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
            out.files += 1;
            out.bytes += len;
        }
    }
    out
}

/// Remove every regular file of `dir` (`ktstr cache clean`).
pub fn clear(dir: &Path) -> Pruned {
    prune(dir, 0, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_go_first_and_recent_ones_stay() {
        let t = tempfile::tempdir().unwrap();
        let mk = |name: &str, age_s: u64| {
            let p = t.path().join(name);
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
                .unwrap();
        };
        mk("a", 5000);
        mk("b", 4000);
        mk("c", 3000);
        mk("fresh", 1);
        let p = prune(t.path(), 2500, MIN_AGE);
        assert_eq!(
            p,
            Pruned {
                files: 2,
                bytes: 2000
            }
        );
        assert!(!t.path().join("a").exists() && !t.path().join("b").exists());
        assert!(t.path().join("c").exists() && t.path().join("fresh").exists());
        // Over budget but too young: kept.
        assert_eq!(prune(t.path(), 0, MIN_AGE).files, 1);
        assert!(t.path().join("fresh").exists());
        assert_eq!(clear(t.path()).files, 1);
    }
}
