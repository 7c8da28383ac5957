#!/usr/bin/env bash
# `--compat upstream` against the authors' pipeline (../shared/reference/ddcolor_reference.py
# colorize, PyTorch + OpenCV) with real-architecture random checkpoints (random_checkpoint.py:
# several seeds and ab strengths), on photos of several sizes and at two model sizes. Prints,
# per case, the share of 8-bit samples within one level of the reference and the largest
# difference, for --compat upstream and, beside it, the default pipeline with --resize nearest
# --gamut clip (the exact Lab formulas). Needs the reference environment (~/refenv, see the
# header of ddcolor_reference.py). Figures in BENCHMARKS.md.
#
#   benches/compat.sh [SEEDS] [ABS] [SIZES]     (defaults "1 2" "25 40" "256 512")
set -euo pipefail
cd "$(dirname "$0")/.."
py="${REFENV:-$HOME/refenv}/bin/python"
ref=../shared/reference
seeds="${1:-1 2}"
abs="${2:-25 40}"
sizes="${3:-256 512}"
cargo build --release --quiet
bin=target/release/ddcolor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
photos=(../shared/fixtures/photos/coffee.jpg ../shared/fixtures/photos/cameraman.png
        ../shared/fixtures/photos/rocket.jpg ../shared/fixtures/photos/1950s/cat-on-the-porch.jpg)
compare() { # A B -> "within1% max"
  "$py" - "$1" "$2" <<'PY'
import sys, cv2, numpy as np
a = cv2.imread(sys.argv[1]).astype(int); b = cv2.imread(sys.argv[2]).astype(int)
d = np.abs(a - b)
print(f"{100 * (d <= 1).mean():.3f} {d.max()}")
PY
}
printf '%-6s %-4s %-5s %-28s %-18s %s\n' seed ab size photo "compat upstream" "default (nearest, clip)"
worst_share=100; worst_max=0
for seed in $seeds; do
  for ab in $abs; do
    ckpt="$work/tiny-$seed-$ab.pth"
    "$py" "$ref/random_checkpoint.py" "$ckpt" --encoder convnext-t --seed "$seed" --ab "$ab" >/dev/null
    for size in $sizes; do
      for photo in "${photos[@]}"; do
        name=$(basename "$photo"); stem="${name%.*}"
        "$py" "$ref/ddcolor_reference.py" colorize --weights "$ckpt" --input "$photo" \
          --output "$work/ref-$stem.png" --size "$size" --resize nearest >/dev/null
        "$bin" colorize "$photo" -o "$work/compat" --weights "$ckpt" --size "$size" --compat upstream \
          --format png --cache none --overwrite --quiet
        "$bin" colorize "$photo" -o "$work/plain" --weights "$ckpt" --size "$size" --resize nearest \
          --gamut clip --format png --cache none --overwrite --quiet
        read -r s1 m1 < <(compare "$work/ref-$stem.png" "$work/compat/$stem.png")
        read -r s2 m2 < <(compare "$work/ref-$stem.png" "$work/plain/$stem.png")
        printf '%-6s %-4s %-5s %-28s %-18s %s\n' "$seed" "$ab" "$size" "$name" "$s1% max $m1" "$s2% max $m2"
        worst_share=$(awk -v a="$worst_share" -v b="$s1" 'BEGIN {print (b < a) ? b : a}')
        worst_max=$(( m1 > worst_max ? m1 : worst_max ))
      done
    done
  done
done
echo "compat upstream, worst case: $worst_share% within one level, max $worst_max"
