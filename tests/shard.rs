//! `--shard K/N` and the schedulers' variables, with real processes: shards run together on
//! one album and one cache read each file once in all, report each input once, infer each
//! distinct image once, and their outputs together equal a single run's byte for byte.
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::batch::{
    colorize_cmd, count, disk_spec as disk, report, run, stderr, tree, ALBUM_FILES, ALBUM_UNIQUE,
};
use crate::util::fixtures;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

fn album_bytes() -> u64 {
    walkdir::WalkDir::new(fixtures("photos"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Shards 0..n of the album, started together on one disk cache; each with its own output
/// folder, report and metrics.
fn shards_together(n: u64, tmp: &std::path::Path, extra: &[&str]) -> Vec<(PathBuf, PathBuf)> {
    let album = fixtures("photos");
    let cache = disk(&tmp.join("cache"));
    let children: Vec<_> = (0..n)
        .map(|k| {
            let mut c = colorize_cmd(
                &[&album],
                &tmp.join(format!("out{k}")),
                &cache,
                &tmp.join(format!("r{k}.json")),
            );
            c.arg("--shard")
                .arg(format!("{k}/{n}"))
                .arg("--metrics-file")
                .arg(tmp.join(format!("m{k}.prom")))
                .args(extra)
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for (k, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "shard {k}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("shard {k}/{n}: ")),
            "the summary names the shard: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(&format!("of {ALBUM_FILES} files")));
    }
    (0..n)
        .map(|k| (tmp.join(format!("out{k}")), tmp.join(format!("r{k}.json"))))
        .collect()
}

#[test]
fn shards_partition_the_album_and_together_equal_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    let o = run(colorize_cmd(
        &[&fixtures("photos")],
        &single,
        "none",
        &tmp.path().join("single.json"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));

    let n = 3;
    let shards = shards_together(n, tmp.path(), &[]);
    let mut union = BTreeMap::new();
    let mut seen = HashSet::new();
    let (mut inferred, mut bytes, mut waited_bytes) = (0, 0.0, 0);
    for (k, (out, rep)) in shards.iter().enumerate() {
        for (p, b) in tree(out) {
            assert!(union.insert(p.clone(), b).is_none(), "{p:?} in two shards");
        }
        let rep = report(rep);
        for r in &rep {
            assert!(
                seen.insert(r["path"].as_str().unwrap().to_owned()),
                "reported twice: {r}"
            );
        }
        inferred += count(&rep, "inferred");
        // an image whose lease another shard held is read again when its value lands (its
        // bytes are not kept while it waits, so waiting costs no memory)
        waited_bytes += rep
            .iter()
            .filter(|r| r["status"] == "cached")
            .map(|r| {
                std::fs::metadata(r["path"].as_str().unwrap())
                    .unwrap()
                    .len()
            })
            .sum::<u64>();
        let m = std::fs::read_to_string(tmp.path().join(format!("m{k}.prom"))).unwrap();
        bytes += metric(&m, "ddcolor_bytes_read");
    }
    assert_eq!(seen.len(), ALBUM_FILES, "each input in exactly one report");
    assert_eq!(
        union,
        tree(&single),
        "the union equals one run, byte for byte"
    );
    assert_eq!(
        inferred, ALBUM_UNIQUE,
        "each distinct image inferred once, duplicates across shards included"
    );
    let bytes = bytes as u64;
    assert!(
        bytes >= album_bytes() && bytes <= album_bytes() + waited_bytes,
        "the album ({} bytes) read once in all, not {n} times: {bytes} bytes read",
        album_bytes()
    );
}

#[test]
fn the_schedulers_variables_pick_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let album = fixtures("photos");
    let r = tmp.path().join("r.json");
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    let mut c = colorize_cmd(&[&album], &tmp.path().join("a"), "none", &r);
    c.envs(slurm);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shard 1/4 (from SLURM_ARRAY_TASK_ID=1"),
        "{}",
        stderr(&o)
    );
    let from_slurm: HashSet<String> = report(&r)
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    // the same shard named on the command line takes the same files
    let mut c = colorize_cmd(&[&album], &tmp.path().join("b"), "none", &r);
    c.args(["--shard", "1/4"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let named: HashSet<String> = report(&r)
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(from_slurm, named);
    assert!(named.len() < ALBUM_FILES);
    // --shard none: everything, whatever the environment says
    let mut c = colorize_cmd(&[&album], &tmp.path().join("c"), "none", &r);
    c.envs(slurm).args(["--shard", "none"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(report(&r).len(), ALBUM_FILES);
    // Kubernetes: the index, and the count from DDCOLOR_SHARDS
    let mut c = colorize_cmd(&[&album], &tmp.path().join("d"), "none", &r);
    c.env("JOB_COMPLETION_INDEX", "1")
        .env("DDCOLOR_SHARDS", "4");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_k8s: HashSet<String> = report(&r)
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(from_k8s, named);
    // an index without a count is bad configuration, as is a shard out of range
    let mut c = colorize_cmd(&[&album], &tmp.path().join("e"), "none", &r);
    c.env("JOB_COMPLETION_INDEX", "1");
    let o = run(c);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("DDCOLOR_SHARDS"), "{}", stderr(&o));
    let mut c = colorize_cmd(&[&album], &tmp.path().join("f"), "none", &r);
    c.args(["--shard", "4/4"]);
    assert_eq!(run(c).status.code(), Some(2));
}
