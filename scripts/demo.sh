#!/usr/bin/env bash
# dsv3 demo: sets up and builds, starts a coordinator and two workers on 127.0.0.1, submits the
# DESIGN.md example job (DeepSeek-V3-style, pipeline 2 with DualPipe, expert parallel 2, fp8) on the
# Brown corpus, shortened to DSV3_DEMO_STEPS steps (default 60) so that it takes a few minutes on
# 2 cores, follows it live, attaches two more workers midway (the job grows to 4 ranks at its next
# checkpoint), and ends with the cost report and an estimate for the full DeepSeek-V3 run. Each
# worker runs its rank as a `dsv3-train run` child process. The full-length job is what
# bench/quality.sh trains.
set -euo pipefail
cd "$(dirname "$0")/.."
# oneDNN runs on OpenMP, whose threads spin while waiting by default and then starve when several
# processes share the cores (measured: 2-thread GEMMs fall from ~350 to 1-30 GFLOP/s).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
scripts/bootstrap.sh
scripts/build.sh dsv3-coordinator dsv3-worker dsv3ctl dsv3-data dsv3-train
STEPS=${DSV3_DEMO_STEPS:-60}

BIN=${DSV3_BUILD_DIR:-build}
RUN=$(mktemp -d /tmp/dsv3-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "[demo] stopped; logs in $RUN"
}
trap cleanup EXIT

say() { printf '\n\033[1m[demo] %s\033[0m\n' "$*"; }

# Data: the Brown corpus, a SentencePiece BPE tokenizer (vocab 4096) and token shards. A repeat
# run with the same arguments does nothing.
say "preparing the Brown corpus (BPE tokenizer, vocab 4096, token shards)"
"$BIN/cli/dsv3-data" prepare --out=data/brown --vocab_size=4096

say "starting the coordinator (state in $RUN/state)"
"$BIN/coordinator/dsv3-coordinator" --port=0 --port_file="$RUN/port" --state_dir="$RUN/state" \
  --lease_ms=1000 --metrics_port=0 >"$RUN/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$RUN/port" ] && break; sleep 0.1; done
[ -s "$RUN/port" ] || { cat "$RUN/coordinator.log"; exit 1; }
export DSV3_COORDINATOR=127.0.0.1:$(cat "$RUN/port")
CTL="$BIN/cli/dsv3ctl"
echo "coordinator at $DSV3_COORDINATOR"

start_worker() {
  "$BIN/worker/dsv3-worker" --name="$1" --node=node-1 --work_dir="$RUN/$1" --threads=1 \
    >"$RUN/$1.log" 2>&1 &
  pids+=($!)
}
say "starting two workers (each runs its rank as a dsv3-train child process)"
for w in worker-a worker-b; do start_worker $w; done
for _ in $(seq 100); do
  [ "$("$CTL" workers --json | grep -c '"state": "idle"')" -ge 2 ] && break
  sleep 0.1
done
"$CTL" workers

say "submitting the example job (docs/examples/brown-tiny.json, $STEPS steps)"
/usr/bin/python3 - "$STEPS" "$RUN" > "$RUN/brown-tiny.json" <<'PY'
import json, sys
steps, run = int(sys.argv[1]), sys.argv[2]
spec = json.load(open("docs/examples/brown-tiny.json"))
spec["train"]["steps"] = steps
spec["train"]["warmup_steps"] = max(1, steps // 10)
spec["train"]["val_every_steps"] = max(1, steps // 2)
spec["train"]["val_tokens"] = 16384
spec["checkpoint"] = {"dir": run + "/checkpoints", "every_steps": max(1, steps // 3)}
print(json.dumps(spec, indent=2))
PY
JOB=$("$CTL" submit "$RUN/brown-tiny.json")
echo "job id: $JOB"
step_of() { "$CTL" status "$JOB" --json | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(s.get("step", 0), s["state"])'; }
for _ in $(seq 600); do
  read -r step state < <(step_of)
  [ "$state" != RUNNING ] && [ "$state" != PENDING ] && break
  [ "$step" -ge $((STEPS / 6)) ] && break
  sleep 0.5
done
"$CTL" status "$JOB"

say "attaching two more workers mid-run: the job takes them in at its next checkpoint"
for w in worker-c worker-d; do start_worker $w; done

say "following the job until it ends (dsv3ctl watch)"
"$CTL" watch "$JOB" || true
"$CTL" status "$JOB" --events=20

say "the cost report (the DeepSeek-V3 report's Table 1 shape)"
"$CTL" report "$JOB" --target_tokens=14.8e12
"$CTL" workers

say "what the full DeepSeek-V3 pre-training would cost (estimate from the published config)"
"$CTL" estimate docs/examples/deepseek-v3-estimate.json --tokens=14.8e12 --devices=2048 \
  --peak_tflops=989 --mfu=0.3894 --price=2
