#!/usr/bin/env bash
# Everything around the model on archive-size scans (figures for BENCHMARKS.md "Codecs"): CPU
# seconds per file of a warm run (every prediction cached, so the run is decode + compose +
# encode), per format, beside OpenCV's imread + imwrite at its defaults on the same files, in
# the same run. The model is the golden test model at 64 px (negligible).
#
#   benches/codecs.sh [PYTHON] [JPEGS] [TIFFS]
#
# PYTHON: an interpreter with opencv-python-headless and numpy (default ~/refenv/bin/python,
# see CONTRIBUTING.md "The reference environment"). JPEGS gray 6000x4000 JPEGs at quality 92
# (default 6) and TIFFS 16-bit gray 6000x4000 TIFFs (default 3) are made first.
# DDCOLOR_BIN=PATH times that binary instead of this checkout's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-$HOME/refenv/bin/python}"
njpeg="${2:-6}"
ntiff="${3:-3}"
golden="$PWD/../shared/golden/ddcolor-test.safetensors"
# DDCOLOR_BIN: another build (e.g. an older commit's, for a before/after)
bin="${DDCOLOR_BIN:-$PWD/target/release/ddcolor}"
[ -n "${DDCOLOR_BIN:-}" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$py" - "$work" "$njpeg" "$ntiff" <<'PY'
import os, sys
import cv2, numpy as np
work, nj, nt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{work}/jpeg"); os.makedirs(f"{work}/tiff")
rng = np.random.default_rng(1)
for k in range(max(nj, nt)):
    # a scan-like gray picture: smooth structure, film grain
    small = rng.random((40, 60)).astype(np.float32)
    img = cv2.resize(small, (6000, 4000), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 0.8 + 0.1 + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)
    if k < nj:
        cv2.imwrite(f"{work}/jpeg/scan{k:02}.jpg", (img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if k < nt:
        cv2.imwrite(f"{work}/tiff/scan{k:02}.tif", (img * 65535).astype(np.uint16))
PY

cpu_of() { awk '/User time/ {u=$4} /System time/ {s=$4} END {printf "%.3f", u+s}' "$1"; }
run() { # NAME INPUT_DIR N [ARGS...]: a cold run fills the cache, the warm one is timed
  local name=$1 dir=$2 n=$3
  shift 3
  "$bin" colorize "$dir" --output "$work/cold-$name" --weights "$golden" --size 64 \
    --cache "disk:$work/cache" --quiet "$@"
  /usr/bin/time -v "$bin" colorize "$dir" --output "$work/warm-$name" --weights "$golden" \
    --size 64 --cache "disk:$work/cache" --quiet "$@" 2>"$work/time-$name"
  local bytes
  bytes=$(du -sb "$work/warm-$name" | cut -f1)
  printf '%s\t%s\t%.0f\n' "$name" \
    "$(awk -v c="$(cpu_of "$work/time-$name")" -v n="$n" 'BEGIN {printf "%.3f", c / n}')" \
    "$(awk -v b="$bytes" -v n="$n" 'BEGIN {printf "%.0f", b / n}')"
}
{
  run jpeg-jpeg "$work/jpeg" "$njpeg" --jpeg-quality 95
  run jpeg-png "$work/jpeg" "$njpeg" --format png
  run tiff-tiff "$work/tiff" "$ntiff"
} >"$work/ddcolor.tsv"

"$py" - "$work" >"$work/opencv.tsv" <<'PY'
import glob, os, resource, sys
import cv2
work = sys.argv[1]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def run(name, files, ext, params=()):
    os.makedirs(f"{work}/cv-{name}")
    c0, size = cpu(), 0
    for f in files:
        # colour out, as ddcolor writes: the gray scan as BGR (16-bit stays 16-bit)
        img = cv2.imread(f, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        out = f"{work}/cv-{name}/{os.path.basename(f)}{ext}"
        cv2.imwrite(out, img, list(params))
        size += os.path.getsize(out)
    print(f"{name}\t{(cpu() - c0) / len(files):.3f}\t{size / len(files):.0f}")
jpegs = sorted(glob.glob(f"{work}/jpeg/*.jpg")); tiffs = sorted(glob.glob(f"{work}/tiff/*.tif"))
run("jpeg-jpeg", jpegs, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95))
run("jpeg-jpeg-444", jpegs, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444))
run("jpeg-png", jpegs, ".png")
run("tiff-tiff", tiffs, ".tif")
PY

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs; OpenCV $("$py" -c 'import cv2; print(cv2.__version__)')"
printf 'case\tddcolor CPU-s/file\tddcolor bytes/file\tOpenCV CPU-s/file\tOpenCV bytes/file\tratio\n'
while IFS=$'\t' read -r name cpu bytes; do
  read -r _ ocpu obytes < <(grep "^$name	" "$work/opencv.tsv")
  printf '%s\t%s\t%s\t%s\t%s\t%.2f\n' "$name" "$cpu" "$bytes" "$ocpu" "$obytes" \
    "$(awk -v a="$cpu" -v b="$ocpu" 'BEGIN {print a / b}')"
done <"$work/ddcolor.tsv"
grep "^jpeg-jpeg-444" "$work/opencv.tsv" | awk -F'\t' '{printf "(OpenCV with 4:4:4 chroma, as ddcolor writes: %s CPU-s, %s bytes)\n", $2, $3}'
