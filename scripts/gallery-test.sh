#!/usr/bin/env bash
# The review page in a real browser, run by CI: colorize the sample album (plus a damaged file
# and a colour photo, so that every status shows), build `ddcolor gallery`, and drive it in
# Debian's headless Chromium with playwright-core (scripts/gallery-test.mjs). Installs chromium
# (apt) and playwright-core (npm, into ~/.cache/ddcolor/node) when missing.
#
#   scripts/gallery-test.sh [SCREENSHOT.jpg|.png]     (default: target/gallery.jpg)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
shot="${1:-$repo/target/gallery.jpg}"
bin="${DDCOLOR_BIN:-$repo/target/release/ddcolor}"
[ -x "$bin" ] || cargo build --release --locked --quiet
if ! command -v chromium >/dev/null 2>&1; then
  echo "gallery-test: installing chromium"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi
node_dir="${XDG_CACHE_HOME:-$HOME/.cache}/ddcolor/node"
if [ ! -d "$node_dir/node_modules/playwright-core" ]; then
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --no-audit --no-fund --silent playwright-core@1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir album
cp -r "$repo/../shared/fixtures/photos/." album/
cp "$repo/../shared/fixtures/bad/truncated.jpg" album/
cp "$repo/../shared/fixtures/reference/coffee.png" album/colour-print.png
"$bin" colorize album --output colorized --weights "$repo/../shared/golden/ddcolor-test.safetensors" \
  --size 64 --device cpu --cache none --report run.ndjson --quiet || [ $? = 1 ]
"$bin" gallery run.ndjson --output review --title "sample album"
# 10,000 images (their files absent: no thumbnails to make), one in five failed
python3 - <<'PY'
import json
with open("big.ndjson", "w") as f:
    for i in range(10000):
        st = "failed" if i % 5 == 0 else "inferred"
        f.write(json.dumps({"path": f"box{i // 1000:02d}/scan{i:05d}.tif", "status": st,
                            "output": None if st == "failed" else f"out/box{i // 1000:02d}/scan{i:05d}.tif",
                            "error": "damaged TIFF file" if st == "failed" else None, "ms": 400}) + "\n")
PY
# its files are absent: named on stderr, exit 1
"$bin" gallery big.ndjson --output review-big --quiet 2>/dev/null || [ $? = 1 ]
# hostile names and a hostile title: a name that opens a comment and a script, and a folder
# named `<` whose file makes the path `</script><img src=x onerror=...>.jpg`
mkdir -p 'hostile/album/<'
cp "$repo/../shared/fixtures/photos/cameraman.png" 'hostile/album/<!--<script>.png'
cp "$repo/../shared/fixtures/photos/rocket.jpg" "hostile/album/</script><img src=x onerror=alert(document.domain)>.jpg"
(cd hostile && "$bin" colorize album --output colorized --weights "$repo/../shared/golden/ddcolor-test.safetensors" \
  --size 64 --device cpu --cache none --report run.ndjson --quiet)
hostile_title='Album __DATA__ </title><script>alert(1)</script>'
"$bin" gallery hostile/run.ndjson --output review-hostile --title "$hostile_title" --quiet
mkdir -p "$(dirname "$shot")"
PLAYWRIGHT_CORE_DIR="$node_dir/node_modules/playwright-core" FLAGGED_OUT="$work/flagged.txt" \
  HOSTILE_PAGE="$work/review-hostile/index.html" HOSTILE_REPORT="$work/hostile/run.ndjson" \
  HOSTILE_TITLE="$hostile_title" \
  node "$repo/scripts/gallery-test.mjs" "$work/review/index.html" run.ndjson "$shot" \
  "$work/review-big/index.html"
# the README's rerun of the list the page saved: exactly the flagged outputs are replaced
cp -r colorized before-rerun
"$bin" colorize --files-from flagged.txt --overwrite --output colorized --quiet \
  --weights "$repo/../shared/golden/ddcolor-test.safetensors" --size 64 --device cpu --cache none \
  --saturation 0.5
python3 - "$work/flagged.txt" <<'PY'
import filecmp, os, sys
flagged = [l.split("/./", 1)[1] for l in open(sys.argv[1]).read().splitlines()]
def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
assert files("colorized") == files("before-rerun"), "the rerun wrote elsewhere"
changed = [f for f in files("colorized") if not filecmp.cmp(f"colorized/{f}", f"before-rerun/{f}", shallow=False)]
assert sorted(changed) == sorted(flagged), f"changed {changed}, flagged {flagged}"
print(f"gallery-test: the flagged list reran exactly {len(flagged)} outputs in place")
PY
