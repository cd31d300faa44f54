#!/usr/bin/env bash
# dsv3 demo: sets up and builds, starts a coordinator and two workers on 127.0.0.1, submits the
# DESIGN.md example job (DeepSeek-V3-style, pipeline 2 with DualPipe, expert parallel 2, fp8) on the
# Brown corpus, shows the cluster and the job, prints a cost estimate, and stops everything cleanly.
# Today the control plane runs end to end; the workers have no training engine yet and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
# oneDNN runs on OpenMP, whose threads spin while waiting by default and then starve when several
# processes share the cores (measured: 2-thread GEMMs fall from ~350 to 1-30 GFLOP/s).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
scripts/bootstrap.sh
scripts/build.sh dsv3-coordinator dsv3-worker dsv3ctl dsv3-data

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

say "starting two workers"
for w in worker-a worker-b; do
  "$BIN/worker/dsv3-worker" --name=$w --node=node-1 --work_dir="$RUN/$w" >"$RUN/$w.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$("$CTL" workers --json | grep -c '"state": "idle"')" -ge 2 ] && break
  sleep 0.1
done
"$CTL" workers

say "submitting the example job (docs/examples/brown-tiny.json)"
JOB=$("$CTL" submit docs/examples/brown-tiny.json)
echo "job id: $JOB"
for _ in $(seq 100); do
  "$CTL" status "$JOB" --json | grep -q '"state": "WAITING_FOR_ENGINE"' && break
  sleep 0.1
done
sleep 0.5
"$CTL" status "$JOB"

say "the cluster now"
"$CTL" workers
"$CTL" jobs

say "what the full DeepSeek-V3 pre-training would cost (estimate from the published config)"
"$CTL" estimate docs/examples/deepseek-v3-estimate.json --tokens=14.8e12 --devices=2048 \
  --peak_tflops=989 --mfu=0.3894 --price=2

say "cancelling the job and shutting down"
"$CTL" cancel "$JOB"
