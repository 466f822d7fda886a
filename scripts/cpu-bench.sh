#!/usr/bin/env bash
# The CPU path side by side with PyTorch, interleaved in one run on this machine (one command):
#   scripts/cpu-bench.sh PYTHON            # PYTHON: an interpreter with reference/requirements.txt
# Each round runs ours, then the peer, for: the MERT-v1-95M forward of one 5 s clip (`bench` vs
# reference/bench_hubert.py, sdpa attention), forward + backward of sum(h) (`bench --train` vs `--train-step`), the
# full training step (`bench --train-step` vs reference/bench_train.py with the vectorized NCE and
# with fairseq's expand-based NCE), and the embed job: 4 x 30 s clips, all 13 layers, whole process
# (`embed --layers all` vs reference/bench_embed.py). Then one profiled run of ours (`--profile`).
# Prints a markdown table of medians over rounds and ratios (PyTorch time / ours: > 1 means we are
# faster), and writes everything to $OUT (default: cpu-bench-<date>.md in the current directory).
#
# `embed` uses every core, so keep THREADS at the core count for that row.
# Environment: THREADS [nproc], ROUNDS [2], CLIP_SECONDS [5], CULTUREMERT_BIN [target/release/culturemert-raw,
# built if missing], WORK [a fresh mktemp -d: random model dir + synthetic clips].
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:?usage: scripts/cpu-bench.sh PYTHON}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-2}
SECONDS_CLIP=${CLIP_SECONDS:-5}
BIN=${CULTUREMERT_BIN:-target/release/culturemert-raw}
WORK=${WORK:-$(mktemp -d)}
OUT=${OUT:-cpu-bench-$(date +%Y%m%d-%H%M).md}
[ -x "$BIN" ] || cargo build --release --quiet
mkdir -p "$WORK"
log=$WORK/log.txt
: >"$log"

say() { printf '%s\n' "$*" | tee -a "$log" >&2; }
# Median of the numbers on stdin.
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
# key=value from our "bench ..." lines; "median_s" from the peer's RESULT json.
ours() { grep "^bench $1 " | sed -E "s/.*median_s=([0-9.]+).*/\1/"; }
peer() { grep '^RESULT ' | sed -E 's/.*"median_s": ([0-9.]+).*/\1/'; }
wall() { local t0 t1; t0=$(date +%s.%N); "$@" >>"$log" 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

say "cpu-bench: $(nproc) cores, $THREADS threads, $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ ! -f "$WORK/model/model.safetensors" ]; then
  "$PY" reference/compare_embed.py prepare --model-dir "$WORK/model" >>"$log" 2>&1
  "$BIN" synth --out "$WORK/clips" --seconds 30 --clips-per-tradition 1 >>"$log" 2>&1
fi
mapfile -t CLIPS < <(find "$WORK/clips" -name '*.wav' | sort | head -n 4)

declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
for r in $(seq 1 "$ROUNDS"); do
  say "round $r"
  o=$("$BIN" bench --threads "$THREADS" --seconds "$SECONDS_CLIP" --train 2>&1 | tee -a "$log")
  add ours_fwd "$(ours forward <<<"$o")"
  add ours_fb "$(ours forward+backward <<<"$o")"
  o=$("$PY" reference/bench_hubert.py --attn sdpa --threads "$THREADS" --seconds "$SECONDS_CLIP" 2>&1 | tee -a "$log")
  add peer_fwd "$(peer <<<"$o")"
  o=$("$PY" reference/bench_hubert.py --attn sdpa --threads "$THREADS" --seconds "$SECONDS_CLIP" --train-step 2>&1 | tee -a "$log")
  add peer_fb "$(peer <<<"$o")"
  o=$("$BIN" bench --threads "$THREADS" --seconds "$SECONDS_CLIP" --train-step 2>&1 | tee -a "$log")
  add ours_step "$(ours train_step <<<"$o")"
  for nce in vectorized fairseq; do
    o=$("$PY" reference/bench_train.py --attn sdpa --threads "$THREADS" --seconds "$SECONDS_CLIP" --nce "$nce" 2>&1 | tee -a "$log")
    add "peer_step_$nce" "$(peer <<<"$o")"
  done
  add ours_embed "$(wall "$BIN" embed --model "$WORK/model" --device cpu --layers all --out "$WORK/ours.safetensors" "${CLIPS[@]}")"
  add peer_embed "$(wall "$PY" reference/bench_embed.py --model-dir "$WORK/model" --threads "$THREADS" --out "$WORK/peer.safetensors" "${CLIPS[@]}")"
done
m() { tr ' ' '\n' <<<"${T[$1]}" | grep . | median; }
row() { printf '| %s | %.3f s | %.3f s | %.2f |\n' "$1" "$(m "$2")" "$(m "$3")" "$(echo "$(m "$3") / $(m "$2")" | bc -l)"; }
{
  echo "CPU path vs PyTorch, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $THREADS threads, median of $ROUNDS interleaved rounds (each a median of its runs), load at start/end: see log"
  echo
  echo "| what (MERT-v1-95M, random weights, ${SECONDS_CLIP} s clip) | ours | PyTorch | PyTorch / ours |"
  echo "|---|---|---|---|"
  row "forward" ours_fwd peer_fwd
  row "forward + backward of sum(h)" ours_fb peer_fb
  row "training step, peer with vectorized NCE" ours_step peer_step_vectorized
  row "training step, peer with fairseq NCE" ours_step peer_step_fairseq
  row "embed, 4 x 30 s, 13 layers, whole process" ours_embed peer_embed
  echo
  echo "Where our time goes (one profiled run of each):"
  "$BIN" bench --threads "$THREADS" --seconds "$SECONDS_CLIP" --iters 1 --train --profile 2>&1 | grep -E '^(profile|\|)'
  "$BIN" bench --threads "$THREADS" --seconds "$SECONDS_CLIP" --iters 1 --train-step --profile 2>&1 | grep -E '^(profile|\|)'
  echo
  echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
echo "cpu-bench: report in $OUT, log in $log" >&2
