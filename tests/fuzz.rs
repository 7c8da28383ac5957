//! Corrupted photos through decode -> prepare, for a bounded time: bit flips, overwritten and
//! spliced bytes, cut files and edited headers of every sample photo (and the known-bad
//! fixtures). No panic, no abort, bounded memory: the cases run in a child process (this test
//! binary, one ignored test) under an address-space limit, so an allocation that aborts, or a
//! case that needs more than the limit without saying so, fails the test. A failing case is
//! saved under the system temp folder with the seed that made it.
//!
//! `DDCOLOR_FUZZ_SECS` sets the time (default 15 s); `DDCOLOR_FUZZ_SEED` the first seed.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ddcolor::imageio;
use ddcolor::pipeline;

/// Address space the cases run in: the test binary's own few hundred MB, and room for the
/// largest image the mutated headers may claim once --max-pixels allows it (refused above).
const LIMIT: u64 = 3 << 30;
/// Pixels a case may claim: a 16-bit RGBA image of this size fits the limit with its working set.
const MAX_PIXELS: u64 = 40_000_000;

#[test]
fn corrupted_photos_never_panic_abort_or_exhaust_memory() {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "fuzz::fuzz_worker",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("DDCOLOR_FUZZ_WORKER", "1");
    crate::util::limit_address_space(&mut c, LIMIT);
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "the fuzz worker failed ({}):\n{out}\n{err}",
        o.status
    );
    let line = out
        .lines()
        .find_map(|l| l.split_once("fuzz: ").map(|(_, tail)| tail))
        .unwrap_or_else(|| panic!("no summary line:\n{out}\n{err}"));
    let cases: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(cases >= 50, "only {cases} cases ran: {line}");
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One corruption of `b`, as damaged scans, cut transfers and edited headers look.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return;
    }
    match rng.below(7) {
        // flip a few bits anywhere
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        // overwrite bytes in the header, where sizes and offsets live
        1 => {
            let head = b.len().min(512);
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(head);
                b[i] = match rng.below(3) {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => rng.next() as u8,
                };
            }
        }
        // cut short
        2 => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        // a run of random bytes over the middle
        3 => {
            let i = rng.below(b.len());
            let n = (1 + rng.below(64)).min(b.len() - i);
            for x in &mut b[i..i + n] {
                *x = rng.next() as u8;
            }
        }
        // a chunk repeated
        4 => {
            let i = rng.below(b.len());
            let n = (1 + rng.below(4096)).min(b.len() - i);
            let chunk = b[i..i + n].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
        // a chunk removed
        5 => {
            let i = rng.below(b.len());
            let n = (1 + rng.below(4096)).min(b.len() - i);
            b.drain(i..i + n);
        }
        // a 16- or 32-bit field in the header set to an extreme
        _ => {
            let head = b.len().min(256);
            let i = rng.below(head.saturating_sub(4).max(1));
            let v: [u8; 4] = match rng.below(4) {
                0 => [0xFF; 4],
                1 => [0x7F, 0xFF, 0xFF, 0xFF],
                2 => [0, 0, 0, 0],
                _ => (rng.next() as u32).to_be_bytes(),
            };
            let n = if rng.below(2) == 0 { 2 } else { 4 };
            for (k, x) in v.iter().take(n).enumerate() {
                if let Some(y) = b.get_mut(i + k) {
                    *y = *x;
                }
            }
        }
    }
}

fn samples() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["photos", "bad"] {
        for e in walkdir::WalkDir::new(crate::util::fixtures(dir)) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                out.push((e.path().to_path_buf(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 5, "the sample photos are missing");
    out
}

#[test]
#[ignore = "run by corrupted_photos_never_panic_abort_or_exhaust_memory in a child process"]
fn fuzz_worker() {
    if std::env::var_os("DDCOLOR_FUZZ_WORKER").is_none() {
        return;
    }
    let secs: u64 = std::env::var("DDCOLOR_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let first_seed: u64 = std::env::var("DDCOLOR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    let samples = samples();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut cases, mut decoded, mut refused) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    let mut seed = first_seed;
    while Instant::now() < deadline {
        seed += 1;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (path, original) = &samples[rng.below(samples.len())];
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut bytes);
        }
        let case = bytes.clone();
        let result = std::panic::catch_unwind(|| {
            match imageio::decode_bytes(path, bytes, MAX_PIXELS) {
                Ok(d) => {
                    let p = pipeline::prepare_image(&d.image, 64);
                    assert_eq!(p.model_input.len(), 3 * 64 * 64);
                    assert!(p.model_input.iter().all(|v| v.is_finite()));
                    true
                }
                Err(e) => {
                    // a refusal names the file and says why
                    assert!(!e.to_string().is_empty());
                    false
                }
            }
        });
        cases += 1;
        match result {
            Ok(true) => decoded += 1,
            Ok(false) => refused += 1,
            Err(_) => {
                let saved = std::env::temp_dir().join(format!("ddcolor-fuzz-case-{seed}.bin"));
                let _ = std::fs::write(&saved, &case);
                failures.push(format!(
                    "seed {seed} ({}): panicked; case saved as {}",
                    path.display(),
                    saved.display()
                ));
            }
        }
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "fuzz: {cases} cases ({decoded} decoded, {refused} refused) from seed {first_seed}, \
         peak RSS {peak} kB"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
