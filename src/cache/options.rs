//! What every backend is opened with besides its spec: [`CacheOptions`] (key prefix, size
//! bound), and the `--cache-max-size` parser.
use super::key;

/// Options every backend takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Key prefix (`--cache-prefix`), [`key::DEFAULT_PREFIX`] by default.
    pub prefix: String,
    /// Bound in bytes (`--cache-max-size`); only the disk backend enforces it (Redis has its
    /// own `maxmemory` and eviction policy).
    pub max_size: Option<u64>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            prefix: key::DEFAULT_PREFIX.to_owned(),
            max_size: None,
        }
    }
}

/// Parse `--cache-max-size`: plain bytes (`1048576`), or a number with a unit. `K`, `M`, `G`,
/// `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024; `kB`, `MB`, `GB`, `TB` powers of
/// 1000; `B` is bytes. Case-insensitive; fractions allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size `{s}`: expected a number of bytes, optionally with a unit (500M, 2G, 1.5GiB)"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: `{num}` is not a number"))?;
    const KI: f64 = 1024.0;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => KI,
        "m" | "mib" => KI * KI,
        "g" | "gib" => KI * KI * KI,
        "t" | "tib" => KI * KI * KI * KI,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "invalid size `{s}`: unknown unit `{other}` (use B, K, M, G, T, KiB..TiB or kB..TB)"
            ))
        }
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size `{s}`: out of range"));
    }
    Ok(bytes as u64)
}
