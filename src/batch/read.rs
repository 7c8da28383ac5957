//! Reading an input once: its bytes into memory (refused first if the file is larger than any
//! image of `--max-pixels` could be), their SHA-256, and the stat before and after the read so
//! that a file changing under the read is never recorded in the index.
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::index::Stat;

/// The largest file an image of `max_pixels` pixels can be: 16-bit RGBA uncompressed, plus
/// room for metadata (ICC profiles, EXIF, thumbnails, trailers).
pub fn max_file_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(64 << 20)
}

/// A file read into memory.
pub struct Read1 {
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
    /// The stat, when it was the same before and after the read (`None`: the file changed
    /// while it was read, so nothing about it may be remembered).
    pub stat: Option<Stat>,
}

/// Read `path` whole, refusing files over `limit` bytes and anything but a regular file.
pub fn read_file(path: &Path, limit: u64) -> Result<Read1, String> {
    let mut f = open_nonblocking(path).map_err(|e| format!("cannot read: {e}"))?;
    let before = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !before.is_file() {
        return Err("not a regular file".into());
    }
    if before.len() > limit {
        return Err(format!(
            "the file is {} bytes, more than any image within --max-pixels can be ({limit} bytes)",
            before.len()
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(before.len() as usize + 1)
        .map_err(|_| format!("not enough memory to read {} bytes", before.len()))?;
    (&mut f)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the file grew past {limit} bytes while it was read (--max-pixels)"
        ));
    }
    let sha256 = sha256(&bytes);
    let before = Stat::of(&before);
    let after = std::fs::metadata(path).ok().map(|m| Stat::of(&m));
    let stat = (after == Some(before) && before.size == bytes.len() as u64).then_some(before);
    Ok(Read1 {
        bytes,
        sha256,
        stat,
    })
}

/// Open for reading without blocking on a FIFO or a device (regular files ignore the flag).
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
