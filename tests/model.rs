//! The DDColor port against the golden PyTorch forward passes, the released key layouts, and
//! broken weight files.
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ddcolor::model::{Checkpoint, Config, DDColor};

use crate::util::{golden, max_abs, max_abs_diff};

const CONTAINERS: [&str; 3] = [
    "ddcolor-test.pth",
    "ddcolor-test-raw.bin",
    "ddcolor-test.safetensors",
];

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(golden("ddcolor-test-io.safetensors"), &Device::Cpu).unwrap()
}

/// The test model's configuration, as `ddcolor-test.json` describes it.
fn expected_test_config() -> Config {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("ddcolor-test.json")).unwrap())
            .unwrap();
    let arr = |v: &serde_json::Value| -> [usize; 4] {
        let v: Vec<usize> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        v.try_into().unwrap()
    };
    let n = |k: &str| json[k].as_u64().unwrap() as usize;
    let nf = n("nf");
    Config {
        encoder: ddcolor::model::convnext::ConvNextConfig {
            dims: arr(&json["encoder"]["dims"]),
            depths: arr(&json["encoder"]["depths"]),
        },
        nf,
        color_decoder: ddcolor::model::color_decoder::ColorDecoderConfig {
            in_channels: [nf, nf, nf / 2],
            hidden_dim: n("hidden_dim"),
            num_heads: n("nheads"),
            dim_feedforward: n("dim_feedforward"),
            num_queries: n("num_queries"),
            dec_layers: n("dec_layers"),
            num_scales: n("num_scales"),
            color_embed_dim: nf / 2,
        },
        num_output_channels: n("num_output_channels"),
    }
}

#[test]
fn all_three_containers_match_the_golden_outputs() {
    let io = io();
    for file in CONTAINERS {
        let model =
            DDColor::load(golden(file), &Device::Cpu).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            *model.config(),
            expected_test_config(),
            "{file}: inferred config"
        );
        for case in ["sq", "wide", "batch"] {
            let out = model.forward(&io[&format!("{case}.input")]).unwrap();
            let d = max_abs_diff(&out, &io[&format!("{case}.output")]);
            assert!(d <= 1e-3, "{file} {case}: max |diff| {d} > 1e-3");
        }
    }
}

#[test]
fn every_intermediate_matches_the_golden_hooks() {
    let io = io();
    let model = DDColor::load(golden("ddcolor-test.safetensors"), &Device::Cpu).unwrap();
    for case in ["sq", "wide"] {
        let mut seen = Vec::new();
        model
            .forward_traced(&io[&format!("{case}.input")], &mut |name, t| {
                let want = &io[&format!("{case}.{name}")];
                let d = max_abs_diff(t, want);
                // relative to the magnitude of the activation
                let tol = 1e-4 * max_abs(want).max(1.0);
                assert!(d <= tol, "{case} {name}: max |diff| {d} > {tol}");
                seen.push(name.to_owned());
                Ok(())
            })
            .unwrap();
        assert_eq!(seen.len(), 9, "all hooks reported: {seen:?}");
    }
}

/// Random tensors with exactly the keys, dtypes and shapes of a released checkpoint, with
/// spectral-norm vectors and BatchNorm statistics that make sense.
fn random_released(keys_file: &str) -> Checkpoint {
    let text = std::fs::read_to_string(golden(keys_file)).unwrap();
    let mut tensors = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut f = line.split('\t');
        let (name, dtype, shape) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let shape: Vec<usize> = shape
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let t = match (dtype, name) {
            ("int64", _) => Tensor::zeros(shape.as_slice(), DType::I64, &Device::Cpu).unwrap(),
            (_, "mean") => Tensor::new(&[0.485f32, 0.456, 0.406], &Device::Cpu)
                .unwrap()
                .reshape((1, 3, 1, 1))
                .unwrap(),
            (_, "std") => Tensor::new(&[0.229f32, 0.224, 0.225], &Device::Cpu)
                .unwrap()
                .reshape((1, 3, 1, 1))
                .unwrap(),
            (_, n) if n.ends_with("running_var") => {
                Tensor::rand(0.5f32, 1.5, shape.as_slice(), &Device::Cpu).unwrap()
            }
            _ => Tensor::randn(0f32, 0.02, shape.as_slice(), &Device::Cpu).unwrap(),
        };
        tensors.push((name.to_owned(), t));
    }
    assert!(
        tensors.len() > 400,
        "{keys_file}: parsed {} keys",
        tensors.len()
    );
    Checkpoint::from_tensors(
        keys_file,
        ddcolor::model::checkpoint::Container::Safetensors,
        tensors,
    )
}

#[test]
fn released_tiny_layout_loads_and_runs_at_512() {
    let ck = random_released("keys-ddcolor-convnext-t.txt");
    let cfg = Config::infer(&ck, 8).unwrap();
    assert_eq!(cfg, Config::paper_tiny());
    assert_eq!(cfg.variant(), "tiny");
    let model = DDColor::from_checkpoint(&ck, cfg, &Device::Cpu).unwrap();
    let unused = ck.unused_keys();
    assert!(
        unused.iter().all(|k| k.starts_with("encoder.arch.norm.")),
        "keys no layer read: {unused:?}"
    );
    let x = Tensor::rand(0f32, 1.0, (1, 3, 512, 512), &Device::Cpu).unwrap();
    let y = model.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 512, 512]);
    let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "non-finite output");
}

#[test]
fn released_large_layout_is_recognised() {
    let ck = random_released("keys-ddcolor-convnext-l.txt");
    let cfg = Config::infer(&ck, 8).unwrap();
    assert_eq!(cfg, Config::large());
    assert_eq!(cfg.variant(), "large");
    assert_eq!(cfg.encoder.name(), "convnext-l");
    DDColor::from_checkpoint(&ck, cfg, &Device::Cpu).unwrap();
}

fn load_err(path: &std::path::Path) -> String {
    match DDColor::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn golden_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(golden("ddcolor-test.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn truncated_files_are_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    for file in CONTAINERS {
        let bytes = std::fs::read(golden(file)).unwrap();
        let p = dir.path().join(file);
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let msg = load_err(&p);
        assert!(msg.contains("truncated or corrupt"), "{file}: {msg}");
        assert!(msg.contains(&p.display().to_string()), "{file}: {msg}");
    }
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(load_err(&empty).contains("empty"));
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, b"these are not weights").unwrap();
    assert!(load_err(&text).contains("neither a PyTorch zip checkpoint nor safetensors"));
}

#[test]
fn a_foreign_safetensors_is_not_ddcolor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resnet.safetensors");
    let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("fc.weight".to_owned(), t)]), &p).unwrap();
    let msg = load_err(&p);
    assert!(msg.contains("is not a DDColor checkpoint"), "{msg}");
    assert!(msg.contains("fc.weight"), "{msg}");
}

#[test]
fn a_missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // one key read by shape inference, one read only when the layer is built
    for key in [
        "decoder.color_decoder.query_feat.weight",
        "decoder.layers.1.bn.running_mean",
        "encoder.arch.stages.2.1.pwconv1.bias",
    ] {
        let mut t = golden_tensors();
        assert!(t.remove(key).is_some(), "{key} is in the golden model");
        let p = dir.path().join("missing.safetensors");
        candle_core::safetensors::save(&t, &p).unwrap();
        let msg = load_err(&p);
        assert!(msg.contains(&format!("missing key `{key}`")), "{msg}");
    }
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let key = "encoder.arch.stages.0.0.pwconv2.bias";
    let mut t = golden_tensors();
    t.insert(
        key.to_owned(),
        Tensor::zeros(17, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("wrong.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let msg = load_err(&p);
    assert!(
        msg.contains(&format!("shape of `{key}` is [17] but [16] was expected")),
        "{msg}"
    );
}

#[test]
fn config_json_sets_the_head_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pytorch_model.bin");
    std::fs::copy(golden("ddcolor-test-raw.bin"), &p).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"num_heads": 4}"#).unwrap();
    let m = DDColor::load(&p, &Device::Cpu).unwrap();
    assert_eq!(m.config().color_decoder.num_heads, 4);
    // 32 hidden channels cannot be split into 5 heads
    std::fs::write(dir.path().join("config.json"), r#"{"nheads": 5}"#).unwrap();
    let msg = load_err(&p);
    assert!(msg.contains("5 attention heads"), "{msg}");
}

#[test]
fn random_weights_of_a_released_architecture_run() {
    let m = DDColor::random(Config::paper_tiny(), &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 64, 64]);
    let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(v.iter().any(|&x| x != v[0]), "output depends on the input");
}

#[test]
fn identity_follows_the_weights_not_the_container() {
    let ids: Vec<String> = CONTAINERS
        .iter()
        .map(|f| {
            DDColor::load(golden(f), &Device::Cpu)
                .unwrap()
                .identity()
                .to_owned()
        })
        .collect();
    assert_eq!(ids[0].len(), 64);
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    // one changed value is another model
    let dir = tempfile::tempdir().unwrap();
    let mut t = golden_tensors();
    let key = "refine_net.0.0.bias";
    t.insert(key.into(), (&t[key] + 1e-3).unwrap());
    let p = dir.path().join("changed.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let changed = DDColor::load(&p, &Device::Cpu).unwrap();
    assert_ne!(changed.identity(), ids[0]);
}

/// The identity is the documented digest, byte for byte, so that the cache entries of every
/// earlier version stay valid: SHA-256 over the configuration's `Debug` text, then per float
/// tensor in key order its name, its dims' `Debug` text and its values as f32 little-endian.
#[test]
fn identity_is_the_documented_digest() {
    use sha2::{Digest, Sha256};
    let model = DDColor::load(golden("ddcolor-test.pth"), &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, Tensor)> = golden_tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(format!("{:?}", model.config()).as_bytes());
    for (k, t) in &tensors {
        if !t.dtype().is_float() {
            continue;
        }
        h.update(k.as_bytes());
        h.update(format!("{:?}", t.dims()).as_bytes());
        let v = t
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(model.identity(), want);
}

#[test]
fn the_reordered_linear_tail_equals_the_upstream_order() {
    let io = io();
    let model = DDColor::load(golden("ddcolor-test.pth"), &Device::Cpu).unwrap();
    for case in ["sq", "wide", "batch"] {
        let x = &io[&format!("{case}.input")];
        let fast = model.forward(x).unwrap();
        let upstream = model.forward_traced(x, &mut |_, _| Ok(())).unwrap();
        let d = max_abs_diff(&fast, &upstream);
        assert!(d < 1e-4, "{case}: {d}");
    }
}

#[test]
fn half_precision_tracks_the_f32_model() {
    // f16 on the CPU (bf16 on the CPU: tests/bf16.rs); the same model on CUDA in bf16 and f16
    // runs in tests/gpu.rs.
    let io = io();
    let model = DDColor::load_as(golden("ddcolor-test.safetensors"), &Device::Cpu, DType::F16)
        .expect("f16 model");
    assert_eq!(model.dtype(), DType::F16);
    let f32_model = DDColor::load(golden("ddcolor-test.safetensors"), &Device::Cpu).unwrap();
    assert_ne!(
        model.identity(),
        f32_model.identity(),
        "dtype must be in the cache identity"
    );
    for case in ["sq", "wide", "batch"] {
        let want = &io[&format!("{case}.output")];
        let out = model.forward(&io[&format!("{case}.input")]).unwrap();
        assert_eq!(
            out.dtype(),
            DType::F32,
            "outputs are f32 whatever the model computes in"
        );
        let d = max_abs_diff(&out, want);
        let scale = max_abs(want);
        eprintln!("f16 {case}: max |diff| {d} (max |ab| {scale})");
        // f16 rounds to 2^-11 relative; through the network that grows to ~2.5e-3 of the
        // output range here: allow 6e-3
        assert!(
            d <= 6e-3 * scale,
            "{case}: f16 max |diff| {d} vs max |ab| {scale}"
        );
    }
}
