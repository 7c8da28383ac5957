//! Sharding an archive between machines without a coordinator: shard `K/N` takes the inputs whose
//! *relative path* (the path the output gets inside `--output`, `/`-separated) hashes to `K`:
//!
//! ```text
//! shard(path) = u64::from_be_bytes(SHA-256(path as bytes)[0..8]) mod N
//! ```
//!
//! SHA-256 of the path's bytes (on Unix, the file name bytes as they are; elsewhere UTF-8), so the
//! same on every platform, version and run: reruns and machines agree, and an archive mounted at
//! different places on different machines shards the same way. Inputs outside the shard are
//! never opened, hashed or reported.
//!
//! With no `--shard`, the scheduler's variables pick it ([`Shard::from_env`]): a Slurm job array
//! (`SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_MIN`/`_MAX`/`_STEP` or `_COUNT`), or a
//! Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with the count in `DDCOLOR_SHARDS`, since
//! Kubernetes does not export the number of completions).
use std::path::Path;

use sha2::{Digest, Sha256};

/// One shard of `count`: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What `--shard` says: a shard, `none`, or nothing (then the environment decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Shard(Shard),
    None,
}

/// `K/N` (0 <= K < N) or `none`.
pub fn parse_shard_arg(s: &str) -> Result<ShardArg, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(ShardArg::None);
    }
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("bad shard {s:?}: expected K/N (0 <= K < N), e.g. 3/16, or none"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad shard {s:?}: expected K/N with whole numbers, e.g. 3/16"))
    };
    Shard::new(num(k)?, num(n)?).map(ShardArg::Shard)
}

impl Shard {
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "bad shard {index}/{count}: K counts from 0 and must be below N (N >= 1)"
            ));
        }
        Ok(Self { index, count })
    }

    /// The shard `relative` falls in, of `count`.
    pub fn of(relative: &Path, count: u64) -> u64 {
        let digest = Sha256::digest(path_bytes(relative));
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % count.max(1)
    }

    /// Whether this shard takes the input whose output path (relative to `--output`) is
    /// `relative`.
    pub fn takes(&self, relative: &Path) -> bool {
        Self::of(relative, self.count) == self.index
    }

    /// The shard a scheduler's variables name, and which variables named it; `Ok(None)` when
    /// none are set. `var` reads one variable (`std::env::var` in the CLI).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Self, String)>, String> {
        let num = |name: &str| -> Result<Option<u64>, String> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}={v:?} is not a whole number")),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?;
            let max = num("SLURM_ARRAY_TASK_MAX")?;
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = num("SLURM_ARRAY_TASK_COUNT")?;
            let (index, n) = match (min, max, count) {
                (Some(min), Some(max), _) if id >= min && (id - min) % step == 0 => {
                    let n = (max - min) / step + 1;
                    if count.is_some_and(|c| c != n) {
                        return Err(format!(
                            "the Slurm array is not a range ({} tasks between {min} and {max}); \
                             pass --shard K/N to each task",
                            count.unwrap_or_default()
                        ));
                    }
                    ((id - min) / step, n)
                }
                (None, _, Some(c)) => (id, c),
                _ => {
                    return Err(format!(
                        "cannot tell which shard Slurm array task {id} is (SLURM_ARRAY_TASK_MIN, \
                         _MAX, _STEP, _COUNT = {min:?}, {max:?}, {step}, {count:?}); pass \
                         --shard K/N"
                    ))
                }
            };
            let shard = Self::new(index, n)
                .map_err(|e| format!("from Slurm's SLURM_ARRAY_TASK_* variables: {e}"))?;
            return Ok(Some((
                shard,
                format!("SLURM_ARRAY_TASK_ID={id} of {n} array tasks"),
            )));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let Some(n) = num("DDCOLOR_SHARDS")? else {
                return Err(format!(
                    "JOB_COMPLETION_INDEX={index} is set (a Kubernetes Indexed Job) but \
                     DDCOLOR_SHARDS is not: set it to the Job's completions, or pass --shard none"
                ));
            };
            let shard = Self::new(index, n)
                .map_err(|e| format!("from JOB_COMPLETION_INDEX and DDCOLOR_SHARDS: {e}"))?;
            return Ok(Some((
                shard,
                format!("JOB_COMPLETION_INDEX={index}, DDCOLOR_SHARDS={n}"),
            )));
        }
        Ok(None)
    }
}

/// The bytes a relative path is hashed as: its names joined by `/` (`.` and empty components
/// dropped, so `./a//b` is `a/b`).
fn path_bytes(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let names = p.components().filter_map(|c| match c {
        std::path::Component::Normal(n) => Some(n),
        _ => None,
    });
    for (i, n) in names.enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(os_bytes(n));
    }
    out
}

#[cfg(unix)]
fn os_bytes(s: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    s.as_bytes()
}

#[cfg(not(unix))]
fn os_bytes(s: &std::ffi::OsStr) -> &[u8] {
    s.to_str().map(str::as_bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn paths(n: usize) -> Vec<std::path::PathBuf> {
        // an archive's shape: boxes of albums of scans, a few name styles
        (0..n)
            .map(|i| {
                let name = match i % 4 {
                    0 => format!("scan_{i:06}.tif"),
                    1 => format!("IMG_{:04}.JPG", i % 10_000),
                    2 => format!("Familie Müller {i}.png"),
                    _ => format!("{i}.tiff"),
                };
                std::path::PathBuf::from(format!("box{:03}/album{:02}/{name}", i / 1000, i % 37))
            })
            .collect()
    }

    #[test]
    fn every_path_is_in_exactly_one_shard() {
        let ps = paths(2_000);
        for n in 1..=64u64 {
            let shards: Vec<Shard> = (0..n).map(|k| Shard::new(k, n).unwrap()).collect();
            for p in &ps {
                assert_eq!(
                    shards.iter().filter(|s| s.takes(p)).count(),
                    1,
                    "{} in N={n}",
                    p.display()
                );
            }
        }
    }

    #[test]
    fn the_function_is_pinned() {
        // documented: the first 8 bytes of SHA-256 of the `/`-joined path, big-endian, mod N;
        // these values must never change (reruns and other machines rely on them)
        let digest = Sha256::digest(b"1950s/cat.jpg");
        let v = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(
            Shard::of(Path::new("1950s/cat.jpg"), 1_000_003),
            v % 1_000_003
        );
        assert_eq!(
            Shard::of(Path::new("./1950s//cat.jpg"), 16),
            Shard::of(Path::new("1950s/cat.jpg"), 16)
        );
        let pinned: Vec<u64> = ["a.jpg", "1950s/cat.jpg", "box001/album07/scan_000123.tif"]
            .iter()
            .map(|p| Shard::of(Path::new(p), 16))
            .collect();
        assert_eq!(pinned, PINNED_16);
    }

    /// `Shard::of(p, 16)` of the paths in `the_function_is_pinned`, computed once (Python:
    /// `int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") % 16`).
    const PINNED_16: [u64; 3] = [10, 15, 1];

    #[test]
    fn shards_are_balanced_on_an_archive() {
        let ps = paths(100_000);
        for n in [2u64, 4, 16, 64] {
            let mut sizes: HashMap<u64, usize> = HashMap::new();
            for p in &ps {
                *sizes.entry(Shard::of(p, n)).or_default() += 1;
            }
            let mean = ps.len() as f64 / n as f64;
            // a few percent: what a uniform hash gives (binomial spread; 1,562 paths a shard
            // at N = 64 vary by 2.5% per standard deviation)
            let tolerance = if n <= 16 { 0.03 } else { 0.08 };
            for k in 0..n {
                let got = *sizes.get(&k).unwrap_or(&0) as f64;
                assert!(
                    (got - mean).abs() <= tolerance * mean,
                    "N={n}: shard {k} has {got}, mean {mean}"
                );
            }
        }
    }

    #[test]
    fn the_argument_and_the_schedulers() {
        assert_eq!(
            parse_shard_arg("3/16").unwrap(),
            ShardArg::Shard(Shard {
                index: 3,
                count: 16
            })
        );
        assert_eq!(parse_shard_arg("none").unwrap(), ShardArg::None);
        for bad in ["16/16", "1/0", "a/b", "3", "-1/4", ""] {
            assert!(parse_shard_arg(bad).is_err(), "{bad}");
        }
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let got = |pairs: &'static [(&'static str, &'static str)]| {
            Shard::from_env(env(pairs)).map(|o| o.map(|(s, _)| s))
        };
        assert_eq!(got(&[]).unwrap(), None);
        // sbatch --array=0-15
        let s = got(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "15"),
            ("SLURM_ARRAY_TASK_COUNT", "16"),
        ]);
        assert_eq!(
            s.unwrap(),
            Some(Shard {
                index: 5,
                count: 16
            })
        );
        // sbatch --array=1-16
        let s = got(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "16"),
            ("SLURM_ARRAY_TASK_COUNT", "16"),
        ]);
        assert_eq!(
            s.unwrap(),
            Some(Shard {
                index: 0,
                count: 16
            })
        );
        // sbatch --array=10-40:10
        let s = got(&[
            ("SLURM_ARRAY_TASK_ID", "30"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_MAX", "40"),
            ("SLURM_ARRAY_TASK_STEP", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(s.unwrap(), Some(Shard { index: 2, count: 4 }));
        // sbatch --array=1,5,7: not a range
        assert!(got(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ])
        .is_err());
        // Kubernetes: the index, and the count from DDCOLOR_SHARDS
        let s = got(&[("JOB_COMPLETION_INDEX", "7"), ("DDCOLOR_SHARDS", "8")]);
        assert_eq!(s.unwrap(), Some(Shard { index: 7, count: 8 }));
        assert!(got(&[("JOB_COMPLETION_INDEX", "7")]).is_err());
        assert!(got(&[("JOB_COMPLETION_INDEX", "8"), ("DDCOLOR_SHARDS", "8")]).is_err());
    }
}
