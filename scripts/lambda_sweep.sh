#!/usr/bin/env bash
# Lambda sweep of task arithmetic (issue 7): merges the single-tradition models of scripts/culture_demo.sh
# (run it first, same $WORK) at each lambda, theta = theta_pre + lambda * sum_i (theta_i - theta_pre),
# probes each merge on the synthetic tags, and writes $WORK/lambda_sweep.csv and $WORK/lambda_sweep.svg
# (test macro ROC-AUC and macro AP, mean ± std over seeds; dashed lines: the base and weight averaging).
#   scripts/lambda_sweep.sh
# Environment: CULTUREMERT_BIN, WORK, TRADITIONS, SEEDS as in culture_demo.sh;
#   LAMBDAS ["0.1 0.2 0.25 0.3 0.5 0.75 1.0"]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CULTUREMERT_BIN:-target/release/culturemert-raw}
WORK=${WORK:-runs/culture-demo}
TRADITIONS=${TRADITIONS:-makam hindustani carnatic lyra}
LAMBDAS=${LAMBDAS:-0.1 0.2 0.25 0.3 0.5 0.75 1.0}
SEEDS=${SEEDS:-3}

if [[ ! -x $BIN ]]; then
    if [[ -z ${CULTUREMERT_BIN:-} ]]; then
        echo "== building $BIN (cargo build --release)"
        cargo build --release
    else
        echo "CULTUREMERT_BIN=$BIN is not an executable" >&2
        exit 1
    fi
fi
MODELS=()
for t in base $TRADITIONS; do
    if [[ ! -f $WORK/runs/$t/model/model.safetensors ]]; then
        echo "no model in $WORK/runs/$t/model: run scripts/culture_demo.sh first (same WORK)" >&2
        exit 1
    fi
    [[ $t != base ]] && MODELS+=(--model "$WORK/runs/$t/model")
done
mkdir -p "$WORK/sweep"
T0=$SECONDS

CSV=$WORK/lambda_sweep.csv
echo "lambda,test_roc_auc_mean,test_roc_auc_std,test_ap_mean,test_ap_std" > "$CSV"
for l in $LAMBDAS; do
    dir=$WORK/sweep/lambda_$l
    echo "== [$((SECONDS - T0)) s] lambda $l"
    rm -rf "$dir" "$dir".cache # a fresh merge changes the model files, so its embedding cache goes too
    "$BIN" merge --base "$WORK/runs/base/model" "${MODELS[@]}" --lambda "$l" --out "$dir"
    "$BIN" probe --model "$dir" --data "$WORK/corpus" --layer all --seeds "$SEEDS" \
        --cache "$dir.cache" --out "$dir.json" > "$dir.log"
    grep '^test' "$dir.log"
    python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
a, p = r["test_roc_auc"], r["test_average_precision"]
print("%s,%.6f,%.6f,%.6f,%.6f" % (sys.argv[1], a["mean"], a["std"], p["mean"], p["std"]))
' "$l" "$dir.json" >> "$CSV"
done

# SVG plot (python3 standard library only): two panels, mean ± std error bars; dashed reference lines for
# the base model and weight averaging when culture_demo.sh left their probe results.
python3 - "$CSV" "$WORK/lambda_sweep.svg" "$WORK/probe/base.json" "$WORK/probe/avg.json" <<'PY'
import csv, json, os, sys
csv_path, svg_path, base_path, avg_path = sys.argv[1:5]
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(csv_path))]
refs = []
for label, path, colour in (("base", base_path, "#888"), ("weight avg", avg_path, "#c60")):
    if os.path.exists(path):
        r = json.load(open(path))
        refs.append((label, colour, r["test_roc_auc"]["mean"], r["test_average_precision"]["mean"]))
W, H, L, R, T, B = 420, 300, 60, 20, 40, 50
panels = [("test macro ROC-AUC", "test_roc_auc"), ("test macro AP", "test_ap")]
xs = [r["lambda"] for r in rows]
x0, x1 = 0.0, max(xs) * 1.05
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
       'font-size="11">' % (2 * W, H), '<rect width="100%" height="100%" fill="white"/>']
for k, (title, key) in enumerate(panels):
    ox = k * W
    lo = [r[key + "_mean"] - r[key + "_std"] for r in rows] + [rf[2 + k] for rf in refs]
    hi = [r[key + "_mean"] + r[key + "_std"] for r in rows] + [rf[2 + k] for rf in refs]
    y0, y1 = min(lo), max(hi)
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda x: ox + L + (x - x0) / (x1 - x0) * (W - L - R)
    sy = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    svg.append('<text x="%g" y="20" text-anchor="middle" font-size="13">%s vs lambda</text>'
               % (ox + W / 2, title))
    svg.append('<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="black"/>'
               % (ox + L, T, W - L - R, H - T - B))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        svg.append('<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#eee"/>' % (ox + L, ox + W - R, sy(yv), sy(yv)))
        svg.append('<text x="%g" y="%g" text-anchor="end">%.3f</text>' % (ox + L - 4, sy(yv) + 4, yv))
    for x in xs:
        svg.append('<text x="%g" y="%g" text-anchor="middle">%g</text>' % (sx(x), H - B + 15, x))
    svg.append('<text x="%g" y="%g" text-anchor="middle">lambda</text>' % (ox + L + (W - L - R) / 2, H - 12))
    for j, (label, colour, auc, ap) in enumerate(refs):
        yv = (auc, ap)[k]
        svg.append('<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-dasharray="5,4"/>'
                   % (ox + L, ox + W - R, sy(yv), sy(yv), colour))
        svg.append('<text x="%g" y="%g" fill="%s">%s %.3f</text>'
                   % (ox + L + 4, T + 12 + 12 * j, colour, label, yv))
    pts = " ".join("%g,%g" % (sx(r["lambda"]), sy(r[key + "_mean"])) for r in rows)
    svg.append('<polyline points="%s" fill="none" stroke="#16c" stroke-width="2"/>' % pts)
    for r in rows:
        m, s, x = r[key + "_mean"], r[key + "_std"], sx(r["lambda"])
        svg.append('<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#16c"/>' % (x, x, sy(m - s), sy(m + s)))
        svg.append('<circle cx="%g" cy="%g" r="3" fill="#16c"/>' % (x, sy(m)))
svg.append("</svg>")
open(svg_path, "w").write("\n".join(svg) + "\n")
PY
echo "== [$((SECONDS - T0)) s] done: $CSV, $WORK/lambda_sweep.svg"
cat "$CSV"
