//! The hand-written kernels against plain candle formulations.
use candle_core::{Device, Tensor, D};
use ddcolor::model::ops;

use crate::util::max_abs_diff;

#[test]
fn depthwise_kernel_matches_grouped_conv2d() {
    for (b, h, w, c, k) in [
        (1, 9, 13, 5, 7),
        (2, 4, 3, 8, 7),
        (1, 16, 16, 3, 3),
        (1, 2, 2, 4, 7),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (k, k, c), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap();
        let fast = ops::depthwise_conv_nhwc(&x, &wt, &bias).unwrap();
        let want = ops::depthwise_conv_reference(&x, &wt, &bias).unwrap();
        let d = max_abs_diff(&fast, &want);
        assert!(d < 1e-4, "{b}x{h}x{w}x{c} k{k}: {d}");
    }
}

#[test]
fn layer_norm_is_accurate_on_large_offsets() {
    // activations with a large mean and a small spread: E[x²]-E[x]² would lose them
    let x = (Tensor::randn(0f32, 0.01, (3, 7, 96), &Device::Cpu).unwrap() + 300.0).unwrap();
    let w = Tensor::randn(1f32, 0.1, 96, &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 0.1, 96, &Device::Cpu).unwrap();
    let got = ops::layer_norm_last(&x, &w, &b, 1e-6).unwrap();
    let x64 = x.to_dtype(candle_core::DType::F64).unwrap();
    let mean = x64.mean_keepdim(D::Minus1).unwrap();
    let xc = x64.broadcast_sub(&mean).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let want = xc
        .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&w.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .broadcast_add(&b.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let d = max_abs_diff(&got, &want);
    assert!(d < 1e-3, "{d}");
}

#[test]
fn pixel_shuffle_and_blur_follow_torch() {
    // PixelShuffle(2): out[c, 2h+i, 2w+j] = in[c*4 + 2i + j, h, w]
    let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 4, 2, 2))
        .unwrap();
    let y = ops::pixel_shuffle(&x, 2).unwrap();
    let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(
        v,
        vec![0., 4., 1., 5., 8., 12., 9., 13., 2., 6., 3., 7., 10., 14., 11., 15.]
    );
    // replication pad (1,0,1,0) + 2x2 mean: the corner stays, edges average with themselves
    let x = Tensor::new(&[[1f32, 3.], [5., 7.]], &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    let v = ops::blur_replicate(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(v, vec![1., 2., 3., 4.]);
}

#[test]
fn fused_channel_ops_match_candle() {
    use ddcolor::model::ops::{add_bias_residual, channel_op, shuffle_blur, Act};
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 2.0, (2, 5, 3, 4), &dev).unwrap();
    let s = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
    for (pre, post) in [
        (Act::Identity, Act::Identity),
        (Act::Relu, Act::Identity),
        (Act::Identity, Act::Relu),
        (Act::Identity, Act::Gelu),
    ] {
        for scale in [None, Some(&s)] {
            let fast = channel_op(&x, scale, &b, 1, pre, post).unwrap();
            let mut y = pre.tensor(&x).unwrap();
            if let Some(s) = scale {
                y = y.broadcast_mul(&s.reshape((1, 5, 1, 1)).unwrap()).unwrap();
            }
            let y = post
                .tensor(&y.broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap()).unwrap())
                .unwrap();
            let d = max_abs_diff(&fast, &y);
            assert!(d < 1e-5, "{pre:?} {post:?} scale {}: {d}", scale.is_some());
        }
    }
    // channels last (bias on the last axis), GELU against candle's exact erf GELU
    let xl = Tensor::randn(0f32, 3.0, (3, 7, 5), &dev).unwrap();
    let fast = channel_op(&xl, None, &b, 2, Act::Identity, Act::Gelu).unwrap();
    let want = xl.broadcast_add(&b).unwrap().gelu_erf().unwrap();
    assert!(max_abs_diff(&fast, &want) < 1e-5);
    let res = Tensor::randn(0f32, 1.0, (3, 7, 5), &dev).unwrap();
    let fast = add_bias_residual(&xl, &b, &res).unwrap();
    let want = (&res + xl.broadcast_add(&b).unwrap()).unwrap();
    assert!(max_abs_diff(&fast, &want) < 1e-5);
    // pixel shuffle + blur fused
    let x = Tensor::randn(0f32, 1.0, (2, 3 * 16, 5, 6), &dev).unwrap();
    let want = ops::blur_replicate(&ops::pixel_shuffle(&x, 4).unwrap()).unwrap();
    assert!(max_abs_diff(&shuffle_blur(&x, 4).unwrap(), &want) < 1e-5);
}

#[test]
fn im2col_convolution_matches_candle_conv2d() {
    let dev = Device::Cpu;
    for (b, c, h, w, o, k) in [
        (1, 5, 7, 9, 4, 3),
        (2, 3, 4, 4, 6, 3),
        (1, 2, 6, 5, 3, 5),
        (1, 3, 1, 1, 2, 3),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
        let fast = ops::conv2d_same(&x, &wt).unwrap();
        let want = x.conv2d(&wt, k / 2, 1, 1, 1).unwrap();
        let d = max_abs_diff(&fast, &want);
        assert!(d < 1e-4, "{b}x{c}x{h}x{w} -> {o}, k{k}: {d}");
    }
}

#[test]
fn subpixel_contraction_matches_the_tensor_formulation() {
    let dev = Device::Cpu;
    let (n, c, s, o) = (37, 6, 16, 2);
    let r = Tensor::randn(0f32, 1.0, (n, c * s), &dev).unwrap();
    let a = Tensor::randn(0f32, 1.0, (o, c), &dev).unwrap();
    let fast = ops::subpixel_contract(&r, &a, s).unwrap();
    // y[p, o*S + s] = sum_c a[o, c] r[p, c*S + s]
    let rv = r.to_vec2::<f32>().unwrap();
    let av = a.to_vec2::<f32>().unwrap();
    let fv = fast.to_vec2::<f32>().unwrap();
    for p in 0..n {
        for oi in 0..o {
            for si in 0..s {
                let want: f32 = (0..c).map(|ci| av[oi][ci] * rv[p][ci * s + si]).sum();
                assert!((fv[p][oi * s + si] - want).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn softmax_matches_candle() {
    // row lengths around the 16-lane split, attention-like scales, a row far from zero
    for n in [1usize, 7, 16, 17, 100, 1024, 4099] {
        let x = (Tensor::randn(0f32, 8.0, (3, 5, n), &Device::Cpu).unwrap() + 50.0).unwrap();
        let got = ops::softmax_last_dim(&x).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-6, "row of {n}: max |diff| {d}");
        let sums = got.sum(D::Minus1).unwrap().flatten_all().unwrap();
        for s in sums.to_vec1::<f32>().unwrap() {
            assert!((s - 1.0).abs() <= 1e-5, "row of {n} sums to {s}");
        }
    }
}
