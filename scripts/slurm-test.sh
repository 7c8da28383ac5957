#!/usr/bin/env bash
# The Slurm recipe on a real, one-machine Slurm (munged + slurmctld + slurmd on localhost, from
# Debian's slurm-wlm and munge, installed when missing): examples/slurm/ddcolor-array.sbatch as
# written, 4 array tasks over the sample album against a redis-server started here. Shows that
#  1. the union of the shards' outputs equals a single-machine run byte for byte, each input
#     appears in exactly one task's report, and the inferences summed over the tasks equal the
#     distinct images; the bytes read by all tasks are about the album's size, not 4x;
#  2. a task killed with scancel and requeued (scontrol requeue) completes its shard.
# Everything it starts is stopped at the end, and its folder removed. Run by .ci/run.
#
#   scripts/slurm-test.sh            (DDCOLOR_BIN: the binary; default target/release/ddcolor)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
say() { echo "slurm-test: $*"; }
fail() { echo "slurm-test: FAILED: $*" >&2; exit 1; }

if ! command -v jq >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq) >/dev/null
fi
for tool in jq redis-server sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done
bin="${DDCOLOR_BIN:-$repo/target/release/ddcolor}"
[ -x "$bin" ] || cargo build --release --locked --quiet
album="$repo/../shared/fixtures/photos"
weights="$repo/../shared/golden/ddcolor-test.safetensors"
[ -d "$album" ] && [ -f "$weights" ] || fail "../shared is missing"

. "$repo/scripts/slurm-local.sh"
work=$(mktemp -d /tmp/ddcolor-slurm.XXXXXX)
chmod 755 "$work"
trap 'slurm_down "$work"; rm -rf "$work"' EXIT
slurm_up "$work"

rport=$(local_redis_up "$work")

files=$(find "$album" -type f | wc -l)
distinct=$(find "$album" -type f -exec sha256sum {} + | cut -d' ' -f1 | sort -u | wc -l)
album_bytes=$(find "$album" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
"$bin" colorize "$album" --output "$work/single" --weights "$weights" --size 64 --device cpu \
  --cache none --quiet

# the recipe as written; on this machine: no GPU, 1 CPU and a little memory per task
submit() { # OUTPUT REPORTS PREFIX [sbatch flags...]
  local out=$1 reports=$2 prefix=$3
  shift 3
  ARCHIVE="$album" OUTPUT="$out" REPORTS="$reports" DDCOLOR="$bin" XDG_CACHE_HOME="$work/xdg" \
    DDCOLOR_CACHE="redis://127.0.0.1:$rport/0" DDCOLOR_WEIGHTS="$weights" \
    sbatch --parsable --array=0-3 --gpus-per-task=0 --cpus-per-task=1 --mem=1G \
    --chdir="$work" --output="$work/log/task-%A_%a.log" "$@" \
    "$repo/examples/slurm/ddcolor-array.sbatch" --size 64 --device cpu --cache-prefix "$prefix"
}
wait_job() { # JOBID SECONDS
  for _ in $(seq 1 "$2"); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 1
  done
  squeue -j "$1"
  return 1
}

# 1. four tasks
t0=$(date +%s.%N)
job=$(submit "$work/out" "$work/reports" run1 --wait)
t1=$(date +%s.%N)
cat "$work"/log/task-*.log
diff -r "$work/single" "$work/out" >/dev/null || fail "the shards' outputs differ from one run"
reported=$(jq -r .path "$work"/reports/*.ndjson | sort)
[ "$(echo "$reported" | wc -l)" = "$files" ] || fail "not every input reported once: $reported"
[ -z "$(echo "$reported" | uniq -d)" ] || fail "inputs in two reports: $(echo "$reported" | uniq -d)"
inferred=$(jq -s '[.[] | select(.status == "inferred")] | length' "$work"/reports/*.ndjson)
[ "$inferred" = "$distinct" ] || fail "$inferred inferences for $distinct distinct images"
read_bytes=$(awk '/^ddcolor_bytes_read / {s += $2} END {printf "%d", s}' "$work"/reports/*.prom)
# each file read once (an image that waits on another task's lease is read again when its
# value lands, so a little more is allowed; N tasks walking everything would read N times)
[ "$read_bytes" -ge "$album_bytes" ] && [ "$read_bytes" -lt $((2 * album_bytes)) ] ||
  fail "$read_bytes bytes read for a $album_bytes-byte album"
tasks=$(ls "$work"/reports/*.ndjson | wc -l)
say "1. job $job: $tasks tasks, $files files, $inferred inferred (= $distinct distinct), outputs = one run; $read_bytes bytes read of a $album_bytes-byte album; $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s"

# 2. a task killed with scancel, then requeued, completes its shard (slow inference, so that it
# is killed halfway)
export DDCOLOR_TEST_INFER_SLEEP_MS=1500
job=$(submit "$work/out2" "$work/reports2" run2)
unset DDCOLOR_TEST_INFER_SLEEP_MS
victim="${job}_1"
for _ in $(seq 1 120); do
  [ -s "$work/reports2/${victim}.0.ndjson" ] && break
  sleep 0.5
done
[ -s "$work/reports2/${victim}.0.ndjson" ] || fail "task $victim wrote nothing"
scancel "$victim"
for _ in $(seq 1 30); do
  scontrol show job "$victim" | grep -q 'JobState=CANCELLED' && break
  sleep 0.5
done
done_before=$(wc -l <"$work/reports2/${victim}.0.ndjson")
scontrol requeue "$victim"
scontrol update jobid="$victim" StartTime=now
wait_job "$job" 180 || fail "the requeued array did not finish"
cat "$work"/log/task-"$job"_1.log
[ -s "$work/reports2/${victim}.1.ndjson" ] || fail "the requeued task wrote no report"
diff -r "$work/single" "$work/out2" >/dev/null || fail "after the requeue the outputs differ from one run"
left=$(jq -rs 'group_by(.path) | map(last) | .[] | select(.status == "failed") | .path' "$work"/reports2/*.ndjson)
[ -z "$left" ] || fail "failed after the requeue: $left"
say "2. task $victim killed after $done_before of its files, requeued: its shard completed, outputs = one run"
say "ok"
