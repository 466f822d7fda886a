#!/usr/bin/env bash
# End-to-end culture demo on the synthetic corpus (issue 7), one command:
#   scripts/culture_demo.sh
# (a) writes the synthetic corpus (audio + tags.csv), (b) pre-trains a tiny base model theta_pre on "western"
# (presets/demo-base.toml), (c) adapts it to each non-western tradition with the two-stage CPT recipe and
# western replay (presets/demo-single.toml), (d) merges the single-tradition models by task arithmetic
# (lambda 0.2) and by weight averaging, (e) probes every model on the synthetic tags (MARBLE-style, all
# layers, 3 seeds), (f) prints and writes $WORK/table.md (test macro ROC-AUC / macro AP, mean±std).
#
# Environment (defaults in brackets):
#   CULTUREMERT_BIN  binary [target/release/culturemert-raw, built with `cargo build --release` if missing]
#   WORK             work dir [runs/culture-demo, git-ignored]; finished steps are reused on re-runs
#   FORCE=1          wipe $WORK first
#   CLIPS [40] per tradition, CLIP_SECONDS [5], BASE_STEPS [60], STAGE1_STEPS [30], STAGE2_STEPS [50],
#   TRADITIONS ["makam hindustani carnatic lyra"], LAMBDA [0.2], SEEDS [3], THREADS [nproc]
# scripts/lambda_sweep.sh reuses the runs in the same $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CULTUREMERT_BIN:-target/release/culturemert-raw}
WORK=${WORK:-runs/culture-demo}
CLIPS=${CLIPS:-40}
CLIP_SECONDS=${CLIP_SECONDS:-5}
BASE_STEPS=${BASE_STEPS:-60}
STAGE1_STEPS=${STAGE1_STEPS:-30}
STAGE2_STEPS=${STAGE2_STEPS:-50}
TRADITIONS=${TRADITIONS:-makam hindustani carnatic lyra}
LAMBDA=${LAMBDA:-0.2}
SEEDS=${SEEDS:-3}
THREADS=${THREADS:-$(nproc)}

if [[ ! -x $BIN ]]; then
    if [[ -z ${CULTUREMERT_BIN:-} ]]; then
        echo "== building $BIN (cargo build --release)"
        cargo build --release
    else
        echo "CULTUREMERT_BIN=$BIN is not an executable" >&2
        exit 1
    fi
fi
[[ ${FORCE:-0} == 1 ]] && rm -rf "$WORK"
mkdir -p "$WORK/runs" "$WORK/merged" "$WORK/probe"
T0=$SECONDS
stamp() { echo "== [$((SECONDS - T0)) s] $*"; }

# (a) corpus
if [[ ! -f $WORK/corpus/tags.csv ]]; then
    stamp "synthetic corpus: $CLIPS clips x $CLIP_SECONDS s per tradition"
    rm -rf "$WORK/corpus"
    "$BIN" synth --out "$WORK/corpus" --clips-per-tradition "$CLIPS" --seconds "$CLIP_SECONDS"
fi

# (b) base model theta_pre
if [[ ! -f $WORK/runs/base/model/model.safetensors ]]; then
    stamp "base model ($BASE_STEPS steps on western)"
    rm -f "$WORK/probe/base".*
    "$BIN" train --config presets/demo-base.toml --run-dir "$WORK/runs/base" --threads "$THREADS" --quiet \
        --set "stages.0.steps=$BASE_STEPS"
fi

# (c) single-tradition CPT models, each from the base
for t in $TRADITIONS; do
    if [[ ! -f $WORK/runs/$t/model/model.safetensors ]]; then
        stamp "CPT on $t ($STAGE1_STEPS + $STAGE2_STEPS steps, western replay in stage 1)"
        rm -rf "$WORK/runs/$t"
        rm -f "$WORK/probe/$t".*
        "$BIN" train --config presets/demo-single.toml --init "$WORK/runs/base/model" \
            --run-dir "$WORK/runs/$t" --threads "$THREADS" --quiet \
            --set "name=\"$t-single\"" \
            --set "stages.0.datasets=[\"$t\"]" --set "stages.1.datasets=[\"$t\"]" \
            --set "stages.0.steps=$STAGE1_STEPS" --set "stages.1.steps=$STAGE2_STEPS"
    fi
done

# (d) merges (always redone: cheap; their embedding caches go with them)
MODELS=()
for t in $TRADITIONS; do MODELS+=(--model "$WORK/runs/$t/model"); done
stamp "merging: task arithmetic lambda $LAMBDA, weight averaging"
rm -rf "$WORK/merged/ta" "$WORK/merged/avg" "$WORK/probe/ta".* "$WORK/probe/avg".*
"$BIN" merge --base "$WORK/runs/base/model" "${MODELS[@]}" --lambda "$LAMBDA" --out "$WORK/merged/ta"
"$BIN" merge --base "$WORK/runs/base/model" "${MODELS[@]}" --average --out "$WORK/merged/avg"

# (e) probing
probe() { # name model_dir
    if [[ ! -f $WORK/probe/$1.json ]]; then
        stamp "probing $1"
        "$BIN" probe --model "$2" --data "$WORK/corpus" --layer all --seeds "$SEEDS" \
            --cache "$WORK/probe/$1.cache" --out "$WORK/probe/$1.json" > "$WORK/probe/$1.log"
        grep '^test' "$WORK/probe/$1.log"
    fi
}
ROWS=("base|theta_pre (western pre-training)|$WORK/runs/base/model")
for t in $TRADITIONS; do ROWS+=("$t|single-tradition CPT: $t|$WORK/runs/$t/model"); done
ROWS+=("ta|task arithmetic, lambda $LAMBDA (${TRADITIONS// /+})|$WORK/merged/ta")
ROWS+=("avg|weight averaging (${TRADITIONS// /+})|$WORK/merged/avg")
for row in "${ROWS[@]}"; do
    IFS='|' read -r name _ dir <<<"$row"
    probe "$name" "$dir"
done

# (f) table
stamp "table"
printf '%s\n' "${ROWS[@]}" | python3 -c '
import json, sys
work, clips, secs, seeds = sys.argv[1:5]
out = ["Synthetic corpus: %s clips x %s s per tradition; probe: all layers (learned softmax weighting), "
       "%s seeds, test split." % (clips, secs, seeds), "",
       "| model | test macro ROC-AUC | test macro AP |", "|---|---|---|"]
for line in sys.stdin.read().splitlines():
    name, label, _ = line.split("|")
    r = json.load(open("%s/probe/%s.json" % (work, name)))
    f = lambda m: "%.4f ± %.4f" % (m["mean"], m["std"])
    out.append("| %s | %s | %s |" % (label, f(r["test_roc_auc"]), f(r["test_average_precision"])))
open(work + "/table.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
' "$WORK" "$CLIPS" "$CLIP_SECONDS" "$SEEDS"
stamp "done: $WORK/table.md"
