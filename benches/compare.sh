#!/usr/bin/env bash
# Side-by-side CPU timing of ddcolor and the PyTorch reference, alternating runs, with peak
# resident memory from /usr/bin/time -v. Prints one Markdown table row per configuration.
#
#   benches/compare.sh [PYTHON] [THREADS] [RUNS]
#   CONFIGS="tiny:384:2 large:320:1" benches/compare.sh ...   # other model:size:batch rows
#
# PYTHON is an interpreter with torch, numpy and vsddcolor installed (see the header of
# ../shared/reference/ddcolor_reference.py); default ~/refenv/bin/python. CONFIGS defaults to
# tiny and large at 256 and 512, batch 1.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-$HOME/refenv/bin/python}"
threads="${2:-2}"
runs="${3:-5}"
ref="../shared/reference/ddcolor_reference.py"
bin=target/release/ddcolor
cargo build --release --quiet

field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}'; }

echo "| model | size | batch | ddcolor median ms | PyTorch median ms | ratio | ddcolor peak RSS MB | PyTorch peak RSS MB | RSS ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for config in ${CONFIGS:-tiny:256:1 tiny:512:1 large:256:1 large:512:1}; do
  IFS=: read -r arch size batch <<<"$config"
  enc=$([ "$arch" = tiny ] && echo convnext-t || echo convnext-l)
  # alternate: ddcolor, PyTorch, ddcolor, PyTorch; keep the better median of each
  best_d=""; best_p=""; rss_d=""; rss_p=""
  for round in 1 2; do
    out=$( { /usr/bin/time -v "$bin" bench --arch "$arch" --size "$size" --batch "$batch" \
             --runs "$runs" --threads "$threads" --device cpu; } 2>&1 )
    m=$(echo "$out" | field median_ms); r=$(echo "$out" | rss_mb)
    if [ -z "$best_d" ] || awk "BEGIN{exit !($m < $best_d)}"; then best_d=$m; fi
    rss_d=$r
    out=$( { /usr/bin/time -v "$py" "$ref" bench --encoder "$enc" --size "$size" --batch "$batch" \
             --runs "$runs" --threads "$threads" --device cpu; } 2>&1 )
    m=$(echo "$out" | field median_ms); r=$(echo "$out" | rss_mb)
    if [ -z "$best_p" ] || awk "BEGIN{exit !($m < $best_p)}"; then best_p=$m; fi
    rss_p=$r
  done
  ratio=$(awk "BEGIN{printf \"%.2f\", $best_d/$best_p}")
  rss_ratio=$(awk "BEGIN{printf \"%.2f\", $rss_d/$rss_p}")
  echo "| $arch | $size | $batch | $best_d | $best_p | $ratio | $rss_d | $rss_p | $rss_ratio |"
done
