//! A matrix transposed into a new contiguous tensor: what loading does for every linear layer
//! (torch stores `[out, in]`, the products want `[in, out]`). candle's strided copy walks the
//! source element by element (a third of the large model's load time); here tiles of 32x32
//! are copied into L1 row by row and written out row by row, in parallel over bands of output
//! rows.
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::common::{contiguous_slice, is_cpu_f32};

const TILE: usize = 32;

/// `t` (`[rows, cols]`) as a contiguous `[cols, rows]`; any dtype and device (CPU f32 through
/// the tiled kernel, the rest through candle).
pub fn transpose2d(t: &Tensor) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    if !is_cpu_f32(&[t]) || rows * cols == 0 {
        return t.t()?.contiguous();
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("transpose2d: not a CPU tensor")
    };
    let src = contiguous_slice(cpu, layout, "transpose2d's input")?;
    let mut dst = vec![0f32; rows * cols];
    // output row j is input column j: each band holds TILE output rows
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let j0 = band * TILE;
            let jn = (cols - j0).min(TILE);
            // a tile is read row by row into L1, then written out row by row: every store
            // is a run of contiguous values (a store per value, each to another cache line,
            // took most of the large model's load time)
            let mut tile = [[0f32; TILE]; TILE];
            for i0 in (0..rows).step_by(TILE) {
                let in_ = (rows - i0).min(TILE);
                for (di, t) in tile.iter_mut().enumerate().take(in_) {
                    t[..jn].copy_from_slice(&src[(i0 + di) * cols + j0..][..jn]);
                }
                for dj in 0..jn {
                    let o = &mut out[dj * rows + i0..][..in_];
                    for (di, x) in o.iter_mut().enumerate() {
                        *x = tile[di][dj];
                    }
                }
            }
        });
    Tensor::from_vec(dst, (cols, rows), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_candles_transpose_for_every_shape() {
        for (r, c) in [(1, 1), (3, 5), (32, 32), (33, 65), (70, 31), (128, 512)] {
            let v: Vec<f32> = (0..r * c).map(|k| k as f32 * 0.5 - 7.0).collect();
            let t = Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap();
            let want = t.t().unwrap().contiguous().unwrap();
            let got = transpose2d(&t).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{r}x{c}"
            );
        }
    }
}
