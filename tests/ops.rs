//! The hand-written kernels against plain candle formulations.
use candle_core::{DType, Device, Tensor, D};
use ddcolor::kernels::activation::Act;
use ddcolor::kernels::epilogue::{Channels, Epilogue};
use ddcolor::kernels::{attention, depthwise, gemm, im2col, norm, tail, winograd};

use crate::util::max_abs_diff;

#[test]
fn depthwise_kernel_matches_grouped_conv2d() {
    // the register-blocked interior path needs 16+ channels and a row wider than k + 3;
    // channel tails past a multiple of 16, border columns, rows narrower than a kernel
    for (b, h, w, c, k) in [
        (1, 9, 13, 5, 7),
        (2, 4, 3, 8, 7),
        (1, 16, 16, 3, 3),
        (1, 2, 2, 4, 7),
        (1, 9, 20, 40, 7),
        (2, 5, 11, 32, 7),
        (1, 6, 10, 17, 3),
        (1, 3, 7, 16, 7),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (k, k, c), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap();
        let fast = depthwise::depthwise_conv_nhwc(&x, &wt, &bias).unwrap();
        let want = depthwise::depthwise_conv_reference(&x, &wt, &bias).unwrap();
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
    let got = norm::layer_norm_last(&x, &w, &b, 1e-6).unwrap();
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
    let y = tail::pixel_shuffle(&x, 2).unwrap();
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
    let v = tail::blur_replicate(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(v, vec![1., 2., 3., 4.]);
}

#[test]
fn fused_channel_ops_match_candle() {
    use ddcolor::kernels::activation::Act;
    use ddcolor::kernels::epilogue::channel_op;
    use ddcolor::kernels::tail::shuffle_blur;
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
    // pixel shuffle + blur fused
    let x = Tensor::randn(0f32, 1.0, (2, 3 * 16, 5, 6), &dev).unwrap();
    let want = tail::blur_replicate(&tail::pixel_shuffle(&x, 4).unwrap()).unwrap();
    assert!(max_abs_diff(&shuffle_blur(&x, 4).unwrap(), &want) < 1e-5);
}

#[test]
fn im2col_and_winograd_convolutions_match_candle_conv2d() {
    let dev = Device::Cpu;
    // odd and even sides (Winograd's 2x2 tiles overhang odd ones), 1x1 planes, batches, more
    // channels than a vector
    for (b, c, h, w, o, k) in [
        (1, 5, 7, 9, 4, 3),
        (2, 3, 4, 4, 6, 3),
        (1, 2, 6, 5, 3, 5),
        (1, 3, 1, 1, 2, 3),
        (1, 40, 12, 10, 33, 3),
        (2, 17, 5, 2, 19, 3),
        (1, 4, 2, 35, 3, 3),
    ] {
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
        let scale = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
        let conv = x.conv2d(&wt, k / 2, 1, 1, 1).unwrap();
        let per_channel = |t: &Tensor| t.reshape((1, o, 1, 1)).unwrap();
        let u = (k == 3).then(|| gemm::Weight::Tensor(winograd::weight(&wt).unwrap()));
        let fast = |epi: &Epilogue| {
            let mut outs = vec![("im2col", im2col::conv2d_same(&x, &wt, epi).unwrap())];
            if let Some(u) = &u {
                outs.push(("winograd", winograd::conv3x3(&x, u, epi).unwrap()));
            }
            outs
        };
        // float rounding, in another order than candle's, grows with the terms per output
        let tol = 1e-4 * ((c * k * k) as f32 / 50.0).max(1.0);
        // conv + bias, ReLU after
        let want = conv
            .broadcast_add(&per_channel(&bias))
            .unwrap()
            .relu()
            .unwrap();
        for (name, got) in fast(&Epilogue::bias(&bias, Act::Relu)) {
            let d = max_abs_diff(&got, &want);
            assert!(d < tol, "{name} {b}x{c}x{h}x{w} -> {o}, k{k}: {d}");
        }
        // conv, ReLU, then a per-channel affine (fastai's conv -> ReLU -> BatchNorm)
        let epi = Epilogue {
            scale: Some(&scale),
            shift: &bias,
            pre: Act::Relu,
            post: Act::Identity,
        };
        let want = conv
            .relu()
            .unwrap()
            .broadcast_mul(&per_channel(&scale))
            .unwrap()
            .broadcast_add(&per_channel(&bias))
            .unwrap();
        for (name, got) in fast(&epi) {
            let d = max_abs_diff(&got, &want);
            assert!(
                d < tol,
                "{name} {b}x{c}x{h}x{w} -> {o}, k{k}, relu+affine: {d}"
            );
        }
    }
}

#[test]
fn subpixel_contraction_matches_the_tensor_formulation() {
    let dev = Device::Cpu;
    let (n, c, s, o) = (37, 6, 16, 2);
    let r = Tensor::randn(0f32, 1.0, (n, c * s), &dev).unwrap();
    let bias = Tensor::randn(0f32, 1.0, c * s, &dev).unwrap();
    let a = Tensor::randn(0f32, 1.0, (o, c), &dev).unwrap();
    let fast = tail::subpixel_contract(&r, &bias, &a, s).unwrap();
    // y[p, o*S + s] = sum_c a[o, c] relu(r[p, c*S + s] + bias[c*S + s])
    let rv = r.to_vec2::<f32>().unwrap();
    let bv = bias.to_vec1::<f32>().unwrap();
    let av = a.to_vec2::<f32>().unwrap();
    let fv = fast.to_vec2::<f32>().unwrap();
    for p in 0..n {
        for oi in 0..o {
            for si in 0..s {
                let want: f32 = (0..c)
                    .map(|ci| av[oi][ci] * (rv[p][ci * s + si] + bv[ci * s + si]).max(0.0))
                    .sum();
                assert!((fv[p][oi * s + si] - want).abs() < 1e-4);
            }
        }
    }
    assert!(tail::subpixel_contract(&r, &bias.narrow(0, 0, 5).unwrap(), &a, s).is_err());
}

#[test]
fn softmax_matches_candle() {
    // row lengths around the 16-lane split, attention-like scales, a row far from zero
    for n in [1usize, 7, 16, 17, 100, 1024, 4099] {
        let x = (Tensor::randn(0f32, 8.0, (3, 5, n), &Device::Cpu).unwrap() + 50.0).unwrap();
        let got = norm::softmax_last_dim(&x).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-6, "row of {n}: max |diff| {d}");
        let sums = got.sum(D::Minus1).unwrap().flatten_all().unwrap();
        for s in sums.to_vec1::<f32>().unwrap() {
            assert!((s - 1.0).abs() <= 1e-5, "row of {n} sums to {s}");
        }
    }
}

#[test]
fn fused_attention_matches_the_tensor_formula() {
    // key counts below, at and across the 512-key tile; a large score range (the online
    // softmax must rescale earlier tiles when a later one holds the maximum); heads with
    // one query, and more queries than the op splits into blocks
    for (n, lq, d, l) in [
        (1usize, 1usize, 4usize, 1usize),
        (3, 7, 8, 511),
        (2, 100, 32, 512),
        (8, 13, 16, 1300),
        (1, 257, 32, 2049),
    ] {
        let q = (Tensor::randn(0f32, 1.0, (n, lq, d), &Device::Cpu).unwrap() * 0.5).unwrap();
        let k = Tensor::randn(0f32, 3.0, (n, d, l), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (n, d, l), &Device::Cpu).unwrap();
        let got = attention::attention_channels_first(&q, &k, &v).unwrap();
        let att = candle_nn::ops::softmax_last_dim(&q.matmul(&k).unwrap()).unwrap();
        let want = att.matmul(&v.t().unwrap()).unwrap();
        assert_eq!(got.dims(), &[n, lq, d]);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "n {n} lq {lq} d {d} l {l}: max |diff| {diff}");
    }
    // mismatched shapes are an error, not a panic
    let q = Tensor::zeros((2, 3, 8), DType::F32, &Device::Cpu).unwrap();
    let k = Tensor::zeros((2, 4, 10), DType::F32, &Device::Cpu).unwrap();
    assert!(attention::attention_channels_first(&q, &k, &k).is_err());
}

#[test]
fn gemm_with_epilogues_matches_candle() {
    let dev = Device::Cpu;
    let r = |dims: &[usize]| Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
    // plain products: shared and batched sides, transposed views, empty inner dimension
    let a = r(&[5, 7]);
    let b = r(&[7, 3]);
    let want = a.matmul(&b).unwrap();
    assert!(max_abs_diff(&gemm::matmul(&a, &b).unwrap(), &want) < 1e-5);
    let at = r(&[7, 5]).t().unwrap();
    let bt = r(&[3, 7]).t().unwrap();
    let want = at
        .contiguous()
        .unwrap()
        .matmul(&bt.contiguous().unwrap())
        .unwrap();
    assert!(max_abs_diff(&gemm::matmul(&at, &bt).unwrap(), &want) < 1e-5);
    let a3 = r(&[4, 5, 7]);
    let want = a3.broadcast_matmul(&b).unwrap();
    let got = gemm::matmul(&a3, &b).unwrap();
    assert_eq!(got.dims(), &[4, 5, 3]);
    assert!(max_abs_diff(&got, &want) < 1e-5);
    let b3 = r(&[4, 7, 3]);
    let want = a.broadcast_matmul(&b3).unwrap();
    assert!(max_abs_diff(&gemm::matmul(&a, &b3).unwrap(), &want) < 1e-5);
    let want = a3.matmul(&b3).unwrap();
    assert!(max_abs_diff(&gemm::matmul(&a3, &b3).unwrap(), &want) < 1e-5);
    // a batch of one stays a batch
    let got = gemm::matmul(&r(&[1, 5, 7]), &b).unwrap();
    assert_eq!(got.dims(), &[1, 5, 3]);
    let empty = gemm::matmul(&r(&[2, 0]).contiguous().unwrap(), &r(&[0, 3])).unwrap();
    assert_eq!(empty.to_vec2::<f32>().unwrap(), vec![vec![0f32; 3]; 2]);
    assert!(gemm::matmul(&a, &a).is_err(), "inner dimensions 7 and 5");
    assert!(
        gemm::matmul(&r(&[3, 5, 7]), &r(&[2, 7, 3])).is_err(),
        "batches 3 and 2"
    );

    // channels along the columns (x W^T + b): bias + GELU
    let bias = r(&[3]);
    let got = gemm::matmul_epilogue(
        &a3,
        &b,
        Channels::Columns,
        &Epilogue::bias(&bias, Act::Gelu),
    )
    .unwrap();
    let want = a3
        .broadcast_matmul(&b)
        .unwrap()
        .broadcast_add(&bias)
        .unwrap()
        .gelu_erf()
        .unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5);
    // channels along the rows (W x on [C, H*W] planes), scale and shift, ReLU before
    let w = r(&[6, 7]);
    let x = r(&[2, 7, 11]);
    let (scale, shift) = (r(&[6]), r(&[6]));
    let epi = Epilogue {
        scale: Some(&scale),
        shift: &shift,
        pre: Act::Relu,
        post: Act::Identity,
    };
    let got = gemm::matmul_epilogue(&w, &x, Channels::Rows, &epi).unwrap();
    let col = |t: &Tensor| t.reshape((6, 1)).unwrap();
    let want = w
        .broadcast_matmul(&x)
        .unwrap()
        .relu()
        .unwrap()
        .broadcast_mul(&col(&scale))
        .unwrap()
        .broadcast_add(&col(&shift))
        .unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5);
    assert!(
        gemm::matmul_epilogue(&w, &x, Channels::Columns, &epi).is_err(),
        "6 scale values for 11 columns"
    );
    // few rows against many columns: split by columns across threads (where there are
    // several), a transposed right side, accumulation onto a residual
    let a = r(&[3, 20]);
    for b in [r(&[20, 1000]), r(&[1000, 20]).t().unwrap()] {
        let want = a.matmul(&b.contiguous().unwrap()).unwrap();
        assert!(max_abs_diff(&gemm::matmul(&a, &b).unwrap(), &want) < 1e-4);
        let (bias, res) = (r(&[1000]), r(&[3, 1000]));
        let got = gemm::matmul_bias_residual(&a, &b, &bias, &res).unwrap();
        let want = (want.broadcast_add(&bias).unwrap() + &res).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }
    // residual: res + a b + bias
    let (a, b, bias) = (r(&[5, 7]), r(&[7, 3]), r(&[3]));
    let res = r(&[5, 3]);
    let got = gemm::matmul_bias_residual(&a, &b, &bias, &res).unwrap();
    let want = (a.matmul(&b).unwrap().broadcast_add(&bias).unwrap() + &res).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5);
}
