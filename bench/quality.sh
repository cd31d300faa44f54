#!/usr/bin/env bash
# Quality of the demo configuration (docs/examples/brown-tiny.json) on the Brown corpus: trains it
# with `dsv3-train run` in each precision and prints the final validation loss of each next to the
# validation loss of a counted bigram model (bench/bigram_baseline.py) on the same tokens.
#
#   bench/quality.sh [--steps=N] [--precisions="fp32 bf16 fp8"] [--threads=N] [--out=DIR]
#                    [--global_batch_tokens=N] [--lr=X] [--warmup_steps=N] [--seed=N]
#
# The full demo is the spec's train.steps (1200 steps of 4096 tokens, 4.9M tokens); --steps changes
# the run's length (the LR schedule then spans N steps). Needs a build (scripts/build.sh) and the corpus
# (scripts/bootstrap.sh). Logs go to --out (default runs/quality). --global_batch_tokens, --lr and
# --warmup_steps override the spec's (the batch studies of docs/benchmarks.md); by default the
# warm-up is the spec's, capped at a tenth of the steps. --seed overrides train.seed (how much a
# different initialisation moves the final loss).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=
PRECISIONS="fp32 bf16 fp8"
THREADS=$(nproc)
OUT=runs/quality
BATCH=
LR=
WARMUP=
SEED=
for arg in "$@"; do
  case "$arg" in
    --steps=*) STEPS=${arg#*=} ;;
    --precisions=*) PRECISIONS=${arg#*=} ;;
    --threads=*) THREADS=${arg#*=} ;;
    --out=*) OUT=${arg#*=} ;;
    --global_batch_tokens=*) BATCH=${arg#*=} ;;
    --lr=*) LR=${arg#*=} ;;
    --warmup_steps=*) WARMUP=${arg#*=} ;;
    --seed=*) SEED=${arg#*=} ;;
    *) echo "usage: $0 [--steps=N] [--precisions=\"fp32 bf16 fp8\"] [--threads=N] [--out=DIR]" \
            "[--global_batch_tokens=N] [--lr=X] [--warmup_steps=N] [--seed=N]" >&2
       exit 2 ;;
  esac
done
BUILD=${DSV3_BUILD_DIR:-build}
export OMP_WAIT_POLICY=passive
mkdir -p "$OUT"
"$BUILD/cli/dsv3-data" prepare --out=data/brown >&2

baseline=$(/usr/bin/python3 bench/bigram_baseline.py data/brown/train.bin data/brown/val.bin \
  --vocab=4096)
echo "bigram baseline: $baseline" >&2

for p in $PRECISIONS; do
  spec="$OUT/brown-tiny-$p.json"
  /usr/bin/python3 - "$p" "$STEPS" "$OUT/ckpt-$p" "$BATCH" "$LR" "$WARMUP" "$SEED" > "$spec" <<'PY'
import json, sys
precision, ckpt, batch, lr, warmup, seed = (sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5],
                                            sys.argv[6], sys.argv[7])
spec = json.load(open("docs/examples/brown-tiny.json"))
steps = int(sys.argv[2]) if sys.argv[2] else spec["train"]["steps"]
if batch:
    spec["train"]["global_batch_tokens"] = int(batch)
if lr:
    spec["train"]["lr"] = float(lr)
    spec["train"]["min_lr"] = float(lr) / 10
if seed:
    spec["train"]["seed"] = int(seed)
spec["name"] = f"brown-tiny-{precision}"
spec["precision"] = precision
spec["train"]["steps"] = steps
spec["train"]["warmup_steps"] = (int(warmup) if warmup else
                                 min(spec["train"].get("warmup_steps", 0), max(1, steps // 10)))
spec["train"]["val_every_steps"] = max(1, steps // 5)
spec["train"]["val_tokens"] = 65536
spec["checkpoint"] = {"dir": ckpt, "every_steps": steps}
print(json.dumps(spec, indent=2))
PY
  rm -rf "$OUT/ckpt-$p"
  echo "== $p: $BUILD/cli/dsv3-train run --spec=$spec --threads=$THREADS" >&2
  /usr/bin/time -f "%e" -o "$OUT/time-$p.txt" \
    "$BUILD/cli/dsv3-train" run --spec="$spec" --threads="$THREADS" | tee "$OUT/log-$p.txt" >&2
done

/usr/bin/python3 - "$OUT" "$baseline" $PRECISIONS <<'PY'
import json, re, sys
out, baseline, precisions = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
bigram = baseline["bigram_val_loss"]
rows = {}
for p in precisions:
    log = open(f"{out}/log-{p}.txt").read()
    vals = re.findall(r"^val\s+step (\d+)/(\d+): loss [0-9.]+\s+main ([0-9.]+)", log, re.M)
    acc = re.findall(r"mtp next-next acc ([0-9.]+)", log)
    secs = float(open(f"{out}/time-{p}.txt").read().split()[-1])
    rows[p] = (float(vals[-1][2]) if vals else float("nan"), acc[-1] if acc else "-", secs,
               vals[-1][0] if vals else "?")
print(f"| precision | steps | final val loss (main) | vs bigram {bigram:.4f} | MTP next-next acc | time (s) |")
print("|---|---|---|---|---|---|")
for p, (v, acc, secs, step) in rows.items():
    print(f"| {p} | {step} | {v:.4f} | {v - bigram:+.4f} | {acc} | {secs:.0f} |")
if "fp8" in rows and "bf16" in rows:
    gap = rows["fp8"][0] / rows["bf16"][0] - 1
    print(f"\nfp8 vs bf16 final val loss: {gap * 100:+.2f}% (target: within 1%)")
PY
