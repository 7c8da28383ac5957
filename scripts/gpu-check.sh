#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA parity tests, then `ddcolor bench` beside the PyTorch
# reference (alternating) for the BENCHMARKS.md table. Prints everything to stdout.
#
#   scripts/gpu-check.sh [SIZES] [BATCHES] [DTYPES]     (default: "512" "1 8" "fp32 bf16")
#
# Built binaries can be brought along instead of building here (a CUDA build of candle is
# ~8 minutes on 2 cores): DDCOLOR_BIN=path/to/ddcolor, DDCOLOR_TEST_BIN=path/to/integration-*
# (the test binary of `cargo test --release --features cuda --no-run`), and DDCOLOR_SHARED for
# ../shared when the repository is not beside it. PY: a python with torch and vsddcolor
# (../shared/reference/ddcolor_reference.py's header); RUNS: timed runs per measurement (10).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-512}
batches=${2:-"1 8"}
dtypes=${3:-"fp32 bf16"}
runs=${RUNS:-10}
py=${PY:-python3}
export DDCOLOR_SHARED="${DDCOLOR_SHARED:-$(cd .. && pwd)/shared}"
ref="$DDCOLOR_SHARED/reference/ddcolor_reference.py"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# cuBLAS, cuBLASLt, cuRAND and NVRTC are loaded at run time: where there is no CUDA install,
# take them from the NVIDIA wheels beside PyTorch (site-packages/nvidia/*/lib)
if site=$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null); then
  for d in "$site"/nvidia/*/lib; do
    LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  export LD_LIBRARY_PATH
fi

if [ -z "${DDCOLOR_BIN:-}" ] || [ -z "${DDCOLOR_TEST_BIN:-}" ]; then
  eval "$(scripts/cuda-toolchain.sh)"
  cargo build --release --features cuda
  export DDCOLOR_BIN="$PWD/target/release/ddcolor"
fi
export DDCOLOR_REQUIRE_GPU=1
echo "== CUDA parity tests"
if [ -n "${DDCOLOR_TEST_BIN:-}" ]; then
  "$DDCOLOR_TEST_BIN" gpu:: --nocapture --test-threads 1
else
  cargo test --release --features cuda --test integration gpu:: -- --nocapture --test-threads 1
fi

echo "== forward pass on the GPU: ddcolor vs the PyTorch reference (median of $runs)"
for arch in tiny large; do
  encoder=$([ "$arch" = tiny ] && echo convnext-t || echo convnext-l)
  for size in $sizes; do
    for batch in $batches; do
      for dtype in $dtypes; do
        "$DDCOLOR_BIN" bench --device cuda --arch "$arch" --size "$size" --batch "$batch" \
          --dtype "$dtype" --runs "$runs" || echo "{\"impl\":\"candle\",\"failed\":\"$arch $size $batch $dtype\"}"
        if "$py" -c 'import torch, vsddcolor' 2>/dev/null; then
          "$py" "$ref" bench --device cuda --encoder "$encoder" --size "$size" --batch "$batch" \
            --dtype "$dtype" --runs "$runs" || echo "{\"impl\":\"pytorch\",\"failed\":\"$arch $size $batch $dtype\"}"
        fi
      done
    done
  done
done
