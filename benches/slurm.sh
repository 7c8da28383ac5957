#!/usr/bin/env bash
# Sharding on a real (one-machine) Slurm, for BENCHMARKS.md: N array tasks of
# examples/slurm/ddcolor-array.sbatch over a synthetic album of FILES distinct PNGs, against a
# redis-server started here, beside one process over the same album and cache (a fresh key
# prefix each). Prints the wall time of each, the bytes of input read (the sum of the tasks'
# ddcolor_bytes_read) against the album's size, and the inferences.
#
#   benches/slurm.sh [FILES] [TASKS]      (defaults 2000 and 4; the test model at 64)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
files="${1:-2000}"
tasks="${2:-4}"
bin="$repo/target/release/ddcolor"
weights="$repo/../shared/golden/ddcolor-test.safetensors"
cargo build --release --quiet
. "$repo/scripts/slurm-local.sh"
work=$(mktemp -d /tmp/ddcolor-slurm-bench.XXXXXX)
chmod 755 "$work"
trap 'slurm_down "$work"; rm -rf "$work"' EXIT
slurm_up "$work"
rport=$(local_redis_up "$work")
cache="redis://127.0.0.1:$rport/0"

python3 benches/make-album.py "$work/album" "$files" 64
album_bytes=$(find "$work/album" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
sum_metric() { awk -v m="$1" '$1 == m {s += $2} END {printf "%d", s}' "${@:2}"; }

t0=$(date +%s.%N)
XDG_CACHE_HOME="$work/xdg-single" "$bin" colorize "$work/album" --output "$work/single" \
  --weights "$weights" --size 64 --device cpu --cache "$cache" --cache-prefix single --quiet \
  --metrics-file "$work/single.prom"
t1=$(date +%s.%N)

ARCHIVE="$work/album" OUTPUT="$work/out" REPORTS="$work/reports" DDCOLOR="$bin" \
  XDG_CACHE_HOME="$work/xdg" DDCOLOR_CACHE="$cache" DDCOLOR_WEIGHTS="$weights" \
  sbatch --parsable --wait --array=0-$((tasks - 1)) --gpus-per-task=0 --cpus-per-task=1 --mem=1G \
  --chdir="$work" --output="$work/log/task-%A_%a.log" \
  "$repo/examples/slurm/ddcolor-array.sbatch" --size 64 --device cpu --cache-prefix sharded --quiet \
  >/dev/null
t2=$(date +%s.%N)

echo "album: $files files, $album_bytes bytes; $(nproc) cores; Slurm: $tasks tasks, 1 CPU each"
awk -v a="$t0" -v b="$t1" -v r="$(sum_metric ddcolor_bytes_read "$work/single.prom")" \
  -v i="$(sum_metric ddcolor_inferences "$work/single.prom")" -v t="$album_bytes" \
  'BEGIN { printf "one process: %.1f s, %d bytes read (%.2fx the album), %d inferences\n", b - a, r, r / t, i }'
awk -v a="$t1" -v b="$t2" -v r="$(sum_metric ddcolor_bytes_read "$work"/reports/*.prom)" \
  -v i="$(sum_metric ddcolor_inferences "$work"/reports/*.prom)" -v t="$album_bytes" -v n="$tasks" \
  'BEGIN { printf "%d Slurm tasks: %.1f s (submit to last task done), %d bytes read in all (%.2fx the album), %d inferences in all\n", n, b - a, r, r / t, i }'
diff -r "$work/single" "$work/out" >/dev/null && echo "outputs: identical" || echo "outputs: DIFFER"
