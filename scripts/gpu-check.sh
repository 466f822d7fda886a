#!/usr/bin/env bash
# One command for a machine with a GPU (issue 11): the tests on the device, the training step against the
# PyTorch peer, the per-kernel profile with its roofline, the kernel benches with the vendor's kernels
# (reference/bench_vendor.py) beside them, and compute-sanitizer, all written into one report.
#
#   scripts/gpu-check.sh bundle [ARCHIVE]   build (release) and pack the stripped binary, the device test
#                                           binaries, the kernel benches, goldens, configs and peer scripts
#                                           [target/gpu-check.tar.gz, must stay under 40 MB]
#   scripts/gpu-check.sh run [ARCHIVE|DIR]  on the GPU machine (no Rust needed): unpack and run everything;
#                                           the report goes to $OUT (or $REPORT_DIR, default ./gpu-check-out)
#   scripts/gpu-check.sh smoke              CI: bundle from the debug build, then `run` on the host emulator
#                                           with tiny shapes (the same steps, a few seconds each)
#
# Environment: PYTHON [python3] for the PyTorch peer (skipped without torch + transformers);
# STEP_TIMEOUT [300] seconds per step; PROFILE [release] for bundle; GPU_CHECK_DEVICE [cuda] for run.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Device test binaries (every kernel/model/training test) and the portable helpers' tests. Not
# emu_checks: it tests the emulator itself (skipped under cuda), and the archive must stay under 40 MB.
TESTS="emu_kernels emu_kernels_attention_tc emu_kernels_cqt emu_kernels_layout emu_kernels_model
emu_kernels_nce emu_kernels_tc emu_model_train model_golden train_fidelity embed_device emu_device
emu_kernels_reduce device_profile golden_dir"
BENCHES="kernels kernels_misc"

die() { echo "gpu-check: $*" >&2; exit 1; }

# Executables of the given cargo targets, "name path" per line, from cargo's JSON messages.
cargo_executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}

bundle() {
  local archive="${1:-$ROOT/target/gpu-check.tar.gz}" profile="${PROFILE:-release}"
  local flag=() targets=()
  [ "$profile" = release ] && flag=(--release)
  for t in $TESTS; do targets+=(--test "$t"); done
  for b in $BENCHES; do targets+=(--bench "$b"); done
  cd "$ROOT" || exit 1
  cargo build "${flag[@]}" --bin culturemert-raw || die "cargo build failed"
  local list
  list="$(cargo test "${flag[@]}" --no-run --message-format=json "${targets[@]}")" ||
    die "building the test and bench binaries failed"
  local stage
  stage="$(mktemp -d)/gpu-check"
  mkdir -p "$stage/bin" "$stage/tests" "$stage/benches" "$stage/reference" "$stage/scripts"
  cp "target/$profile/culturemert-raw" "$stage/bin/"
  printf '%s\n' "$list" | cargo_executables | while read -r name path; do
    case " $(echo $BENCHES) " in
      *" $name "*) cp "$path" "$stage/benches/$name" ;;
      *) cp "$path" "$stage/tests/$name" ;;
    esac
  done
  strip "$stage"/bin/* "$stage"/tests/* "$stage"/benches/* 2>/dev/null || echo "gpu-check: strip failed, packing unstripped" >&2
  cp -r reference/golden reference/*.py "$stage/reference/"
  cp -r configs "$stage/"
  cp scripts/gpu-check.sh "$stage/scripts/"
  git rev-parse --short HEAD >"$stage/COMMIT" 2>/dev/null || echo unknown >"$stage/COMMIT"
  mkdir -p "$(dirname "$archive")"
  tar -C "$(dirname "$stage")" -cf - gpu-check | gzip -9 >"$archive" || die "packing failed"
  rm -rf "$(dirname "$stage")"
  local bytes
  bytes=$(wc -c <"$archive")
  echo "gpu-check: bundle $archive: $bytes bytes ($profile build)"
  # Aim: under 40 MB; hard limit: what a device session can carry (64 MiB).
  if [ "$profile" = release ] && [ "$bytes" -ge 64000000 ]; then
    die "bundle is over 64 MB"
  elif [ "$profile" = release ] && [ "$bytes" -ge 40000000 ]; then
    echo "gpu-check: warning: bundle is over the 40 MB aim" >&2
  fi
}

# Runs a step with a timeout, its output appended to the report under a heading.
step() {
  local title="$1"
  shift
  local t0=$SECONDS
  {
    echo
    echo "## $title"
    echo
    echo '```'
    echo "\$ $*"
  } >>"$REPORT"
  timeout "${STEP_TIMEOUT:-300}" "$@" >"$LOG" 2>&1
  local rc=$?
  cat "$LOG" >>"$REPORT"
  echo '```' >>"$REPORT"
  echo "($title: exit $rc, $((SECONDS - t0)) s)" >>"$REPORT"
  echo "gpu-check: $title: exit $rc, $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || FAILED+=("$title (exit $rc)")
  return $rc
}

# "ours" line for the summary table from bench-device's machine-readable line.
ours_fields() { # LOG -> "audio_s_per_s peak_gib"
  awk -v a="$1" '/^bench-device /{for(i=2;i<=NF;i++){split($i,kv,"=");v[kv[1]]=kv[2]}}
    END{if(v["median_s"]>0) printf "%.1f %.2f\n", a/v["median_s"], v["peak_bytes"]/2^30; else print "? ?"}' "$LOG"
}

peer_fields() { # LOG -> "audio_s_per_s peak_gib"
  sed -n 's/^RESULT //p' "$LOG" | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["audio_s_per_s"], r.get("peak_gib") or "?")
' 2>/dev/null | tail -n 1
}

run_all() {
  local src="${1:-$ROOT/target/gpu-check.tar.gz}"
  local dev="${GPU_CHECK_DEVICE:-cuda}" smoke="${SMOKE:-0}"
  local out="${OUT:-${REPORT_DIR:-$PWD/gpu-check-out}}"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  local dir="$src"
  if [ -f "$src" ]; then
    mkdir -p "$out/bundle"
    tar -C "$out/bundle" -xzf "$src" || die "cannot unpack $src"
    dir="$out/bundle/gpu-check"
  fi
  [ -x "$dir/bin/culturemert-raw" ] || die "no bundle at $src (run: scripts/gpu-check.sh bundle)"
  dir="$(cd "$dir" && pwd)"
  cd "$dir" || exit 1
  REPORT="$out/gpu-check-report.md"
  LOG="$out/step.log"
  PYTHON="${PYTHON:-python3}"
  FAILED=()
  local start=$SECONDS bin="$dir/bin/culturemert-raw"
  export CULTUREMERT_GOLDEN_DIR="$dir/reference/golden" CULTUREMERT_TEST_DEVICE="$dev"
  {
    echo "# culturemert-raw GPU check"
    echo
    echo "commit $(cat COMMIT), $(date -u '+%Y-%m-%d %H:%M UTC'), device $dev$([ "$smoke" = 1 ] && echo ', smoke mode (tiny shapes)')"
  } >"$REPORT"

  if command -v nvidia-smi >/dev/null; then
    step "GPU and driver" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "no nvidia-smi on this machine" >>"$REPORT"
  fi

  local tests=$TESTS
  [ "$smoke" = 1 ] && tests="golden_dir device_profile emu_device"
  for t in $tests; do
    step "tests: $t (CULTUREMERT_TEST_DEVICE=$dev)" "tests/$t"
  done

  # Training step: ours and the PyTorch peer, same shapes.
  local have_torch=0 shapes="4 32" secs=5 precisions="f32 bf16" steps=5 config=()
  if "$PYTHON" -c 'import torch, transformers' 2>/dev/null &&
     "$PYTHON" -c "import torch, sys; sys.exit(0 if '$dev' != 'cuda' or torch.cuda.is_available() else 1)"; then
    have_torch=1
  fi
  if [ "$smoke" = 1 ]; then
    shapes="2"; secs=0.5; steps=1; config=(--config configs/tiny-demo.json)
  fi
  local table="| batch x ${secs} s | precision | ours audio-s/s | PyTorch audio-s/s | ours / PyTorch | ours peak GiB | PyTorch peak GiB |
|---|---|---|---|---|---|---|"
  for b in $shapes; do
    for p in $precisions; do
      local o="? ?" q="? ?"
      if step "bench-device $b x $secs s $p" "$bin" bench-device --device "$dev" "${config[@]}" \
          --batch "$b" --seconds "$secs" --precision "$p" --steps "$steps"; then
        o="$(ours_fields "$(echo "$b * $secs" | awk '{print $1*$3}')")"
      fi
      if [ $have_torch = 1 ]; then
        local pdev=cpu
        [ "$dev" = cuda ] && pdev=cuda
        if step "PyTorch peer $b x $secs s $p" "$PYTHON" reference/bench_train.py --device $pdev \
            --precision "$p" --attn sdpa --nce vectorized --batch "$b" --seconds "$secs" \
            --runs $((steps * 2)) --warmup 1 "${config[@]}"; then
          q="$(peer_fields)"
        fi
      fi
      read -r oa om <<<"$o"
      read -r qa qm <<<"${q:-? ?}"
      local ratio
      ratio="$(awk -v a="$oa" -v b="$qa" 'BEGIN{if(a+0>0&&b+0>0) printf "%.2f", a/b; else print "?"}')"
      table+="
| $b | $p | $oa | $qa | $ratio | $om | $qm |"
    done
  done
  [ $have_torch = 1 ] || table+="

(PyTorch peer not run: no torch + transformers for $PYTHON$([ "$dev" = cuda ] && echo ' with CUDA'))"

  if [ "$smoke" = 1 ]; then
    step "bench-device --profile (emulator, tiny)" "$bin" bench-device --device "$dev" "${config[@]}" \
      --batch 2 --seconds 0.5 --precision bf16 --steps 1 --profile
    step "bench-device --profile (dry run, 32 x 5 s bf16)" "$bin" bench-device --device dry-run \
      --batch 32 --seconds 5 --precision bf16 --steps 1 --profile
  else
    step "bench-device --profile 32 x 5 s bf16" "$bin" bench-device --device "$dev" --batch 32 \
      --seconds 5 --precision bf16 --steps 2 --profile
    step "bench-device --profile 4 x 5 s f32" "$bin" bench-device --device "$dev" --batch 4 \
      --seconds 5 --precision f32 --steps 2 --profile
  fi

  for b in $BENCHES; do
    if [ "$smoke" = 1 ]; then
      step "criterion $b (test mode)" "benches/$b" --test
    else
      step "criterion $b" "benches/$b" --bench --warm-up-time 0.1 --measurement-time 0.5
    fi
    cp "$LOG" "$out/criterion-$b.txt"
  done
  if [ $have_torch = 1 ] && [ "$dev" = cuda ]; then
    step "vendor yardsticks (cuBLAS, cuDNN, sdpa through PyTorch) vs our kernels" "$PYTHON" \
      reference/bench_vendor.py --ours "$out/criterion-kernels.txt"
  else
    echo -e "\nvendor yardsticks: need a GPU and PyTorch, skipped" >>"$REPORT"
  fi

  if command -v compute-sanitizer >/dev/null && [ "$dev" = cuda ]; then
    step "compute-sanitizer memcheck, 2 demo training steps" compute-sanitizer --tool memcheck \
      --error-exitcode 1 "$bin" train --device cuda --stop-after 2 --run-dir "$out/sanitizer-run"
  else
    echo -e "\ncompute-sanitizer: not installed or no GPU, skipped" >>"$REPORT"
  fi

  {
    echo
    echo "## Summary"
    echo
    echo "$table"
    echo
    echo "Failed steps: ${#FAILED[@]}"
    for f in "${FAILED[@]}"; do echo "- $f"; done
    echo
    echo "Wall time: $((SECONDS - start)) s"
  } >>"$REPORT"
  rm -f "$LOG"
  echo "gpu-check: report $REPORT ($((SECONDS - start)) s, ${#FAILED[@]} failed steps)"
  sed -n '/^## Summary/,$p' "$REPORT"
  [ ${#FAILED[@]} -eq 0 ]
}

case "${1:-}" in
  bundle) shift; bundle "$@" ;;
  run) shift; run_all "$@" ;;
  smoke)
    shift
    t0=$SECONDS
    archive="$ROOT/target/gpu-check-smoke.tar.gz"
    PROFILE=debug bundle "$archive" || exit 1
    OUT="${OUT:-$ROOT/target/gpu-check-smoke}" GPU_CHECK_DEVICE=emu SMOKE=1 run_all "$archive"
    rc=$?
    echo "gpu-check: smoke done in $((SECONDS - t0)) s (exit $rc)"
    exit $rc
    ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
