//! Batch throughput: a cold run (empty disk cache) and a warm run (every image cached) over the
//! sample album replicated to a few hundred distinct files, with the golden test model, so the
//! figures measure the tool (walk, hash, cache, decode, compose, encode, write) rather than the
//! network.
//!
//! `cargo bench --bench throughput [-- FILES SIZE RUNS]` (defaults: 300 files, size 64, 3 runs).
#![allow(clippy::disallowed_macros)] // a tool of our own: printing that panics is fine
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use ddcolor::batch::index::Index;
use ddcolor::batch::{self, walk, BatchOptions, LazyModel};
use ddcolor::cache::{self, CacheOptions};
use ddcolor::model::DDColor;
use ddcolor::pipeline::ResizeMode;
use ddcolor::Colorizer;

fn shared(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(p)
}

/// Copy the album `n` times over, each copy made distinct by bytes after the image's end (so
/// its SHA-256 differs but its pixels do not).
fn replicate(dir: &Path, n: usize) {
    let album = shared("fixtures/photos");
    let files: Vec<PathBuf> = walkdir::WalkDir::new(&album)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    for i in 0..n {
        let src = &files[i % files.len()];
        let name = format!(
            "{:03}/{i:04}-{}",
            i / 50,
            src.file_name().unwrap().to_string_lossy()
        );
        let dest = dir.join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut bytes = std::fs::read(src).unwrap();
        bytes.extend_from_slice(format!("copy {i}").as_bytes());
        std::fs::write(dest, bytes).unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let files: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(300);
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);

    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    replicate(&album, files);
    let model = DDColor::load(shared("golden/ddcolor-test.safetensors"), &Device::Cpu).unwrap();
    let colorizer = LazyModel::ready(Colorizer::new(model, size, ResizeMode::Bilinear).unwrap());

    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let cache_dir = tmp.path().join(format!("cache{r}"));
        let cache = cache::open(
            &format!("disk:{}", cache_dir.display()),
            &CacheOptions::default(),
        )
        .unwrap();
        for (label, times) in [("cold", &mut cold), ("warm", &mut warm)] {
            let out = tmp.path().join(format!("out-{label}-{r}"));
            let opts = BatchOptions {
                output: out.clone(),
                quiet: true,
                ..BatchOptions::default()
            };
            let sources = walk::Sources {
                roots: vec![album.clone()],
                ..walk::Sources::default()
            };
            let t = Instant::now();
            let outcome = batch::run(
                &colorizer,
                cache.as_ref(),
                &Index::disabled(),
                &sources,
                &opts,
                None,
            )
            .unwrap();
            times.push(t.elapsed());
            let s = &outcome.summary;
            assert_eq!(s.failed, 0, "{}", s.render());
            if label == "warm" {
                assert_eq!(s.inferred, 0, "warm run inferred");
            }
        }
    }
    let threads = rayon::current_num_threads();
    for (label, times) in [("cold", cold), ("warm", warm)] {
        let m = median(times);
        println!(
            "{{\"bench\":\"throughput\",\"run\":\"{label}\",\"files\":{files},\"size\":{size},\"threads\":{threads},\"median_s\":{:.3},\"files_per_s\":{:.1}}}",
            m.as_secs_f64(),
            files as f64 / m.as_secs_f64()
        );
    }
}
