#!/usr/bin/env bash
# Install nvcc and the CUDA headers from NVIDIA's wheels on the Python package index into a
# private folder (once; later calls reuse it), then print the `export` lines that make
# `cargo build --release --features cuda` work, on a machine with or without a GPU:
#
#   eval "$(scripts/cuda-toolchain.sh)" && cargo build --release --features cuda
#
# Why these versions: nvcc is pinned to CUDA 13.0 because PTX from an nvcc newer than the
# driver does not load (the GPU machines we target run driver 580 = CUDA 13.0), and cudarc
# (candle 0.11) only accepts the CUDA versions it knows, named by CUDARC_CUDA_VERSION.
#
# Environment: DDCOLOR_CUDA_HOME (where to install; default ~/.cache/ddcolor/cuda-13.0),
# CUDA_COMPUTE_CAP (default 90 = Hopper; 80 for A100, 89 for L4/RTX 40xx), PYTHON (python3).
set -euo pipefail

prefix="${DDCOLOR_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ddcolor/cuda-13.0}"
python="${PYTHON:-python3}"
cap="${CUDA_COMPUTE_CAP:-90}"
wheels=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  # nvcc's dependency on nvvm is unpinned upstream; a newer nvvm emits PTX that ptxas 13.0
  # rejects ("Unsupported .version 9.5")
  "nvidia-nvvm==13.0.88"
)

stamp="$prefix/installed-$(printf '%s\n' "${wheels[@]}" | cksum | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
  echo "cuda-toolchain: installing nvcc 13.0 into $prefix (once)" >&2
  mkdir -p "$prefix"
  [ -x "$prefix/venv/bin/python" ] || "$python" -m venv "$prefix/venv" >&2
  "$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[@]}" >&2
  touch "$stamp"
fi

site=$("$prefix/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root="$site/nvidia/cu13"
if [ ! -x "$root/bin/nvcc" ]; then
  echo "cuda-toolchain: no nvcc under $root; remove $prefix and run again" >&2
  exit 1
fi
# candle-kernels links its MoE kernels against the CUDA runtime (`-lcudart`). Linked as the
# shared library, the binary would need libcudart.so.13 just to start, and ddcolor must start
# and run on the CPU on machines without CUDA. So `-lcudart` finds the static runtime here
# (it loads the driver only when a GPU is first used); the driver and the other CUDA
# libraries are loaded at run time by cudarc (vendor/cudarc/PATCHED.md).
link="$prefix/link"
mkdir -p "$link"
ln -sfn "$root/lib/libcudart_static.a" "$link/libcudart.a"

cat <<OUT
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export PATH="$root/bin:\$PATH"
export LD_LIBRARY_PATH="$root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$link\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$cap"
export CUDARC_CUDA_VERSION=13000
OUT
