#!/usr/bin/env bash
# Side-by-side CPU timing of ddcolor (f32 and bf16) and the PyTorch reference, with ONNX
# Runtime and OpenVINO (its default precision, and f32 forced) beside them, alternating runs,
# with peak resident memory from /usr/bin/time -v. Prints the CPU, then one Markdown table row
# per configuration.
#
#   benches/compare.sh [PYTHON] [THREADS] [RUNS]
#   CONFIGS="tiny:384:2 large:320:1" benches/compare.sh ...   # other model:size:batch rows
#   PEERS=0 benches/compare.sh ...                             # ddcolor and PyTorch only
#
# PYTHON is an interpreter with torch, numpy, vsddcolor, onnx, onnxruntime and openvino
# installed (CONTRIBUTING.md "The reference environment"); default ~/refenv/bin/python.
# CONFIGS defaults to tiny and large at 256 and 512, batch 1. ONNX Runtime and OpenVINO run
# the model exported to ONNX by benches/peers.py, at batch 1 (their columns are empty for
# other batches).
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
# keep the smaller of a best-so-far and a new value
better() { if [ -z "$1" ] || awk "BEGIN{exit !($2 < $1)}"; then echo "$2"; else echo "$1"; fi; }

model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx512f|avx512_bf16|amx_bf16|amx_tile' | tr '\n' ' ')
echo "CPU: $model (family $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -1), model $(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(nproc) cores; flags: ${flags:-none of avx512f avx512_bf16 amx}; $threads threads, $runs runs"
echo
echo "| model | size | batch | ddcolor f32 ms | ddcolor bf16 ms | PyTorch f32 ms | ONNX Runtime f32 ms | OpenVINO default ms | OpenVINO f32 ms | bf16 / OpenVINO default | ddcolor f32 RSS MB | ddcolor bf16 RSS MB | PyTorch RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for config in ${CONFIGS:-tiny:256:1 tiny:512:1 large:256:1 large:512:1}; do
  IFS=: read -r arch size batch <<<"$config"
  enc=$([ "$arch" = tiny ] && echo convnext-t || echo convnext-l)
  # alternate: ddcolor f32, bf16, PyTorch, the peers; twice; keep the better median of each
  best_d=""; best_b=""; best_p=""; best_o=""; best_v=""; best_f=""; ov_prec=""
  for round in 1 2; do
    for dtype in f32 bf16; do
      out=$( { /usr/bin/time -v "$bin" bench --arch "$arch" --size "$size" --batch "$batch" \
               --runs "$runs" --threads "$threads" --device cpu --dtype "$dtype"; } 2>&1 )
      m=$(echo "$out" | field median_ms); r=$(echo "$out" | rss_mb)
      if [ "$dtype" = f32 ]; then best_d=$(better "$best_d" "$m"); rss_d=$r
      else best_b=$(better "$best_b" "$m"); rss_b=$r; fi
    done
    out=$( { /usr/bin/time -v "$py" "$ref" bench --encoder "$enc" --size "$size" --batch "$batch" \
             --runs "$runs" --threads "$threads" --device cpu; } 2>&1 )
    m=$(echo "$out" | field median_ms); rss_p=$(echo "$out" | rss_mb)
    best_p=$(better "$best_p" "$m")
    if [ "${PEERS:-1}" = 1 ] && [ "$batch" = 1 ]; then
      out=$("$py" benches/peers.py --encoder "$enc" --size "$size" --threads "$threads" \
            --runs "$runs" --only onnxruntime,openvino,openvino-f32 2>/dev/null)
      best_o=$(better "$best_o" "$(echo "$out" | grep '"onnxruntime' | field median_ms)")
      best_v=$(better "$best_v" "$(echo "$out" | grep '(default)' | field median_ms)")
      best_f=$(better "$best_f" "$(echo "$out" | grep '(f32 forced)' | field median_ms)")
      ov_prec=$(echo "$out" | grep '(default)' | sed -n 's/.*"precision": *"\([^"]*\)".*/\1/p')
    fi
  done
  vs_ov=$([ -n "$best_v" ] && awk "BEGIN{printf \"%.2f\", $best_b/$best_v}" || echo "")
  echo "| $arch | $size | $batch | $best_d | $best_b | $best_p | $best_o | $best_v${ov_prec:+ ($ov_prec)} | $best_f | $vs_ov | $rss_d | $rss_b | $rss_p |"
done