//! The cached value: the model's ab prediction at model resolution, quantised to 0.01 Lab units
//! (i16), compressed losslessly, behind a header and a SHA-256 checksum that are verified on
//! every read.
//!
//! Layout (little endian): magic `DDAB`, u32 schema, u32 size, u32 channels (2), 32-byte
//! SHA-256 of the body, body. The body is one byte naming the predictor, then zstd over the
//! quantised planes after prediction: each sample is predicted from its decoded neighbours
//! (the left one, the gradient left + up - upper-left, or LOCO-I's median edge detector, the
//! predictor of lossless JPEG-LS: whichever compresses this value best), the residual is
//! zigzag-coded to u16, and the low bytes of all residuals are followed by all the high bytes
//! (nearly all zero). A prediction is smooth where the photo is, so residuals are small: about
//! a third of the raw planes (BENCHMARKS.md, "Cache values"). Decoding gives back exactly the
//! quantised samples that were encoded.
//!
//! Encoding costs ~0.2 s at 512 (zstd's level 17: its optimal parsing finds the repeats a
//! greedy one misses, 8% smaller than level 9); the batch engine does it on threads of its own
//! (`batch::store`). Decoding, on every hit, takes ~2 ms.
//!
//! Both the hit and the miss path compose from the *decoded* value ([`quantise`] is the same
//! numbers), so a cache hit and a fresh inference write byte-identical files.
use sha2::{Digest, Sha256};

use super::key::SCHEMA;

const MAGIC: &[u8; 4] = b"DDAB";
const HEADER: usize = 4 + 4 + 4 + 4 + 32;
/// Lab units per stored step.
pub const STEP: f32 = 0.01;
/// zstd level of the stored value.
const LEVEL: i32 = 17;
/// zstd level that ranks the predictors (fast; ranks them as the stored level does).
const TRIAL_LEVEL: i32 = 3;

fn quantise_one(v: f32) -> i16 {
    (v / STEP).round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// How a sample is predicted from the samples before it (in raster order, per plane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Predictor {
    Left = 1,
    Gradient = 2,
    Median = 3,
}

impl Predictor {
    const ALL: [Self; 3] = [Self::Left, Self::Gradient, Self::Median];

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == b)
    }

    /// The prediction of sample (x, y) of a `size`-wide plane whose earlier samples are `p`:
    /// the rule inside, the left neighbour on the first row, the upper one in the first column.
    #[inline]
    fn predict(self, p: &[i16], size: usize, x: usize, y: usize) -> i16 {
        let i = y * size + x;
        match (x, y) {
            (0, 0) => 0,
            (_, 0) => p[i - 1],
            (0, _) => p[i - size],
            _ => {
                let (a, b, c) = (p[i - 1], p[i - size], p[i - size - 1]);
                match self {
                    Self::Left => a,
                    Self::Gradient => a.wrapping_add(b).wrapping_sub(c),
                    Self::Median => {
                        if c >= a.max(b) {
                            a.min(b)
                        } else if c <= a.min(b) {
                            a.max(b)
                        } else {
                            a.wrapping_add(b).wrapping_sub(c)
                        }
                    }
                }
            }
        }
    }
}

/// Quantise, compress and frame an ab prediction (`channels*size*size` f32, planar).
pub fn encode(ab: &[f32], size: usize, channels: usize) -> Vec<u8> {
    assert_eq!(ab.len(), channels * size * size, "ab length");
    let q: Vec<i16> = ab.iter().map(|&v| quantise_one(v)).collect();
    let compress = |raw: &[u8], level| {
        zstd::bulk::compress(raw, level).expect("zstd compresses into a growable buffer")
    };
    let (predictor, raw) = Predictor::ALL
        .into_iter()
        .map(|p| (p, residual_bytes(&q, size, p)))
        .min_by_key(|(_, raw)| compress(raw, TRIAL_LEVEL).len())
        .expect("predictors");
    let mut body = vec![predictor as u8];
    body.extend_from_slice(&compress(&raw, LEVEL));
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&(channels as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

/// Verify and unpack a stored value; `None` if anything is off (wrong magic, schema, size,
/// checksum, predictor, or a body that does not decompress to exactly `channels*size*size`
/// samples): the caller treats that as a miss. Decompression never allocates more than that.
pub fn decode(bytes: &[u8], size: usize, channels: usize) -> Option<Vec<f32>> {
    if bytes.len() < HEADER + 1 || &bytes[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    if u32_at(4) != SCHEMA || u32_at(8) as usize != size || u32_at(12) as usize != channels {
        return None;
    }
    let body = &bytes[HEADER..];
    if Sha256::digest(body)[..] != bytes[16..48] {
        return None;
    }
    let predictor = Predictor::from_byte(body[0])?;
    let n = channels.checked_mul(size)?.checked_mul(size)?;
    let raw = zstd::bulk::decompress(&body[1..], n.checked_mul(2)?).ok()?;
    if raw.len() != 2 * n {
        return None;
    }
    Some(
        samples_from_residuals(&raw, size, predictor)
            .into_iter()
            .map(|q| q as f32 * STEP)
            .collect(),
    )
}

/// What a fresh prediction looks like after a round trip through the cache.
pub fn quantise(ab: &[f32]) -> Vec<f32> {
    ab.iter().map(|&v| quantise_one(v) as f32 * STEP).collect()
}

/// Planes of samples to the byte stream that is compressed: zigzag residuals, low bytes then
/// high bytes.
fn residual_bytes(q: &[i16], size: usize, predictor: Predictor) -> Vec<u8> {
    let n = q.len();
    let mut out = vec![0u8; 2 * n];
    let (lo, hi) = out.split_at_mut(n);
    for (plane_index, plane) in q.chunks_exact(size * size).enumerate() {
        let base = plane_index * size * size;
        for y in 0..size {
            for x in 0..size {
                let i = y * size + x;
                let r = plane[i].wrapping_sub(predictor.predict(plane, size, x, y));
                let z = ((r << 1) ^ (r >> 15)) as u16;
                lo[base + i] = z as u8;
                hi[base + i] = (z >> 8) as u8;
            }
        }
    }
    out
}

/// The inverse of [`residual_bytes`].
fn samples_from_residuals(raw: &[u8], size: usize, predictor: Predictor) -> Vec<i16> {
    let n = raw.len() / 2;
    let (lo, hi) = raw.split_at(n);
    let mut q = vec![0i16; n];
    for (plane_index, plane) in q.chunks_exact_mut(size * size).enumerate() {
        let base = plane_index * size * size;
        for y in 0..size {
            for x in 0..size {
                let i = y * size + x;
                let z = u16::from(lo[base + i]) | (u16::from(hi[base + i]) << 8);
                let r = ((z >> 1) as i16) ^ -((z & 1) as i16);
                plane[i] = r.wrapping_add(predictor.predict(plane, size, x, y));
            }
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth field with edges and extremes, like a prediction (and some i16 wrap-around).
    fn field(size: usize, channels: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(channels * size * size);
        for c in 0..channels {
            for y in 0..size {
                for x in 0..size {
                    let s = ((x as f32 * 0.05).sin() * 40.0 + (y as f32 * 0.03).cos() * 30.0)
                        * if c == 0 { 1.0 } else { -0.7 };
                    let edge = if (x / 16 + y / 16) % 2 == 0 {
                        25.0
                    } else {
                        -25.0
                    };
                    v.push(s + edge + (x * 7 + y * 13) as f32 % 3.0 * 0.004);
                }
            }
        }
        // the clamp's extremes, next to each other (residuals that wrap)
        let n = v.len();
        v[1 % n] = 400.0;
        v[2 % n] = -400.0;
        v[(size + 1) % n] = 327.67;
        v
    }

    #[test]
    fn round_trip_gives_the_quantised_samples_exactly() {
        for size in [1, 2, 3, 17, 64] {
            let ab = field(size, 2);
            let stored = encode(&ab, size, 2);
            assert_eq!(decode(&stored, size, 2), Some(quantise(&ab)), "size {size}");
        }
    }

    #[test]
    fn every_predictor_round_trips() {
        let size = 33;
        let q: Vec<i16> = field(size, 2).iter().map(|&v| quantise_one(v)).collect();
        for p in Predictor::ALL {
            let raw = residual_bytes(&q, size, p);
            assert_eq!(samples_from_residuals(&raw, size, p), q, "{p:?}");
        }
    }

    #[test]
    fn a_smooth_prediction_is_compressed() {
        let size = 256;
        let stored = encode(&field(size, 2), size, 2);
        let raw = HEADER + 2 * 2 * size * size;
        assert!(
            stored.len() * 3 < raw,
            "{} bytes for {raw} raw",
            stored.len()
        );
    }

    #[test]
    fn anything_off_is_a_miss() {
        let size = 32;
        let stored = encode(&field(size, 2), size, 2);
        assert!(decode(&stored, size + 1, 2).is_none(), "other size");
        assert!(decode(&stored, size, 1).is_none(), "other channel count");
        for i in [0, 5, 20, HEADER, HEADER + 1, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, size, 2).is_none(), "byte {i} flipped");
        }
        assert!(decode(&stored[..stored.len() - 1], size, 2).is_none());
        // a well-formed frame around a body that decompresses to too many samples, or names
        // no predictor
        let mut long = stored[..16].to_vec();
        let mut body = vec![1u8];
        body.extend(zstd::bulk::compress(&vec![0u8; 2 * 2 * size * size + 2], 1).unwrap());
        long.extend_from_slice(&Sha256::digest(&body));
        long.extend_from_slice(&body);
        assert!(decode(&long, size, 2).is_none(), "oversized body");
        let mut unknown = stored[..16].to_vec();
        let mut body = stored[HEADER..].to_vec();
        body[0] = 9;
        unknown.extend_from_slice(&Sha256::digest(&body));
        unknown.extend_from_slice(&body);
        assert!(decode(&unknown, size, 2).is_none(), "unknown predictor");
        // schema 1 (raw i16 planes) is not read as schema 2
        let mut old = stored[..16].to_vec();
        old[4..8].copy_from_slice(&1u32.to_le_bytes());
        let payload = vec![0u8; 2 * 2 * size * size];
        old.extend_from_slice(&Sha256::digest(&payload));
        old.extend_from_slice(&payload);
        assert!(decode(&old, size, 2).is_none(), "schema 1 value");
    }
}
