#!/usr/bin/env bash
# The streaming batch engine at archive scale (figures for BENCHMARKS.md):
#  1. time to first output over a folder of large files: bytes read (rchar of /proc/PID/io)
#     when the first output lands, against the folder's size;
#  2. peak RSS for N and 10N files (distinct small images, the test model, no cache);
#  3. a warm rerun (all cached, new output folder) against a cold run of the sample album with a
#     real-architecture random checkpoint at 512, and a rerun with every output present (peak
#     RSS, whether the model was loaded).
#
#   benches/stream.sh [CHECKPOINT.pth] [N]
#
# CHECKPOINT defaults to /tmp/ddcolor-tiny-random.pth, made with
# ../shared/reference/random_checkpoint.py (needs ~/refenv, see ddcolor_reference.py) if absent.
# N defaults to 2000. LARGE="40 100" sets the large-file folder (count, MB each).
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt="${1:-/tmp/ddcolor-tiny-random.pth}"
n="${2:-2000}"
read -r large_n large_mb <<<"${LARGE:-40 100}"
bin="$PWD/target/release/ddcolor"
golden="$PWD/../shared/golden/ddcolor-test.safetensors"
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}' "$1"; }
secs() { awk '/Elapsed \(wall clock\)/ {n=split($8,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; printf "%.2f", s}' "$1"; }

# COUNT distinct 8-bit gray PNGs of SIDE pixels under DIR (1000 per subfolder)
make_pngs() { python3 benches/make-album.py "$@"; } # DIR COUNT SIDE

echo "## 1. time to first output: $large_n files of $large_mb MB"
make_pngs "$work/large" "$large_n" 64
total=0
for f in "$work"/large/*/*.png; do
  truncate -s "${large_mb}M" "$f"
  total=$((total + large_mb * 1024 * 1024))
done
sync
"$bin" colorize "$work/large" -o "$work/large-out" --weights "$golden" --size 64 --cache none -q &
pid=$!
t0=$(date +%s.%N)
while [ -z "$(find "$work/large-out" -type f ! -name '*.ddcolor-tmp' 2>/dev/null | head -1)" ]; do
  sleep 0.002
done
read_at_first=$(awk '/^rchar/ {print $2}' "/proc/$pid/io")
t1=$(date +%s.%N)
wait $pid
t2=$(date +%s.%N)
awk -v r="$read_at_first" -v t="$total" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
  printf "first output after %.2f s of %.2f s, %.0f MB of %.0f MB read (%.1f%%)\n", b - a, c - a, r / 1048576, t / 1048576, 100 * r / t }'

echo "## 2. peak RSS: $n and $((n * 10)) files"
for count in "$n" $((n * 10)); do
  make_pngs "$work/many-$count" "$count" 32
  /usr/bin/time -v "$bin" colorize "$work/many-$count" -o "$work/many-$count-out" \
    --weights "$golden" --size 64 --cache none -q 2>"$work/time-$count"
  echo "$count files: peak RSS $(rss_mb "$work/time-$count") MB, $(secs "$work/time-$count") s"
done

echo "## 3. cold, warm and no-op reruns with $ckpt at 512 on the sample album"
if [ ! -f "$ckpt" ]; then
  ~/refenv/bin/python ../shared/reference/random_checkpoint.py "$ckpt" --encoder convnext-t
fi
cache="disk:$work/cache"
run() { # LABEL OUT
  /usr/bin/time -v "$bin" colorize examples/photos -o "$work/$2" --weights "$ckpt" --size 512 \
    --cache "$cache" --metrics-file "$work/$1.prom" -q 2>"$work/time-$1"
  echo "$1: $(secs "$work/time-$1") s, peak RSS $(rss_mb "$work/time-$1") MB, model loaded: $(awk '/^ddcolor_model_loaded/ {print $2}' "$work/$1.prom")"
}
run cold album-cold
run warm album-warm
run noop album-warm
awk -v c="$(secs "$work/time-cold")" -v w="$(secs "$work/time-warm")" 'BEGIN { printf "cold / warm: %.1fx\n", c / w }'
