//! The cached value: the model's ab prediction at model resolution, quantised to 0.01 Lab units
//! (i16), behind a header and a SHA-256 checksum that are verified on every read.
//!
//! Layout (little endian): magic `DDAB`, u32 schema, u32 size, u32 channels (2),
//! 32-byte SHA-256 of the payload, payload `channels*size*size` i16.
//!
//! Both the hit and the miss path compose from the *decoded* value, so a cache hit and a fresh
//! inference write byte-identical files.
use sha2::{Digest, Sha256};

use super::key::SCHEMA;

const MAGIC: &[u8; 4] = b"DDAB";
const HEADER: usize = 4 + 4 + 4 + 4 + 32;
/// Lab units per stored step.
pub const STEP: f32 = 0.01;

/// Quantise and frame an ab prediction (`channels*size*size` f32, planar).
pub fn encode(ab: &[f32], size: usize, channels: usize) -> Vec<u8> {
    assert_eq!(ab.len(), channels * size * size, "ab length");
    let mut payload = Vec::with_capacity(ab.len() * 2);
    for &v in ab {
        let q = (v / STEP).round().clamp(i16::MIN as f32, i16::MAX as f32) as i16;
        payload.extend_from_slice(&q.to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&(channels as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Verify and unpack a stored value; `None` if anything is off (wrong magic, schema, size,
/// length or checksum): the caller treats that as a miss.
pub fn decode(bytes: &[u8], size: usize, channels: usize) -> Option<Vec<f32>> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    if u32_at(4) != SCHEMA || u32_at(8) as usize != size || u32_at(12) as usize != channels {
        return None;
    }
    let payload = &bytes[HEADER..];
    if payload.len() != channels * size * size * 2 || Sha256::digest(payload)[..] != bytes[16..48] {
        return None;
    }
    Some(
        payload
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 * STEP)
            .collect(),
    )
}

/// What a fresh prediction looks like after a round trip through the cache.
pub fn quantise(ab: &[f32]) -> Vec<f32> {
    ab.iter()
        .map(|&v| (v / STEP).round().clamp(i16::MIN as f32, i16::MAX as f32) * STEP)
        .collect()
}
