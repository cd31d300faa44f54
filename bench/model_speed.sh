#!/usr/bin/env bash
# One training step (forward + backward) of the demo model (docs/examples/brown-tiny.json, one
# micro-batch of 16 x 128 tokens) in dsv3 (bench/model_step_bench.cc, fp32 / bf16 / fp8) against
# the same model in PyTorch 1.13 CPU (bench/torch_model_step.py, fp32 and bf16 autocast), with the
# same thread count and batch. The two sides run alternately for --rounds rounds (the machine is
# shared and noisy) and the table gives, per mode, the median over rounds of each round's median
# step (wall clock), the best round, and the median tokens per CPU-second (process CPU time: with
# one thread, the speed on an idle core; the steadiest figure here), each with its ratio to the
# faster PyTorch mode by the same measure. Not a test.
#
# Usage: bench/model_speed.sh [--build=build-bench] [--threads=N] [--batch=16] [--seq=128]
#          [--steps=5] [--warmup=3] [--rounds=3] [--recompute] [--torch_env=tuned|default]
#   (build first: cmake --build <build> --target model_step_bench)
# Environment of both sides: OMP_WAIT_POLICY=passive (libgomp threads spin otherwise, and collapse
# when other processes share the cores: PyTorch fp32 measured 20 s/step instead of 1 s with 2
# threads at load 5), OMP_NUM_THREADS=N. --torch_env=tuned (default) also gives PyTorch the
# settings that make it fastest here: OPENBLAS_NUM_THREADS=N, OPENBLAS_CORETYPE=SkylakeX (this
# image sets Haswell, which halves OpenBLAS's FP32 GEMM speed) and glibc malloc keeping freed
# memory (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1 GiB: the allocator setting dsv3's Model
# makes itself with mallopt); --torch_env=default leaves the image's environment as it is.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
threads="$(nproc)"
batch=16 seq=128 steps=5 warmup=3 rounds=3 recompute="" torch_env=tuned
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --threads=*) threads="${arg#*=}" ;;
    --batch=*) batch="${arg#*=}" ;;
    --seq=*) seq="${arg#*=}" ;;
    --steps=*) steps="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    --recompute) recompute="--recompute" ;;
    --torch_env=*) torch_env="${arg#*=}" ;;
    *) echo "usage: $0 [--build=DIR] [--threads=N] [--batch=16] [--seq=128] [--steps=5]" \
            "[--warmup=3] [--rounds=3] [--recompute] [--torch_env=tuned|default]" >&2; exit 2 ;;
  esac
done
bench="$build/bench/model_step_bench"
[[ -x "$bench" ]] || { echo "$bench not built (cmake --build $build --target model_step_bench)" >&2; exit 1; }

common_env=(OMP_WAIT_POLICY=passive "OMP_NUM_THREADS=$threads")
torch_extra=()
if [[ "$torch_env" == tuned ]]; then
  torch_extra=("OPENBLAS_NUM_THREADS=$threads" OPENBLAS_CORETYPE=SkylakeX MALLOC_MMAP_MAX_=0
               MALLOC_TRIM_THRESHOLD_=1073741824)
elif [[ "$torch_env" != default ]]; then
  echo "--torch_env must be tuned or default" >&2; exit 2
fi
flags=("--batch=$batch" "--seq=$seq" "--threads=$threads" "--steps=$steps" "--warmup=$warmup")

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "threads=$threads batch=$batch seq=$seq steps=$steps warmup=$warmup rounds=$rounds" \
     "${recompute:+recompute} torch_env=$torch_env"
echo "# load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  env "${common_env[@]}" "$bench" "${flags[@]}" --precision=fp32,bf16,fp8 $recompute |
    sed "s/^/round=$r side=dsv3 /" | tee -a "$log"
  env "${common_env[@]}" "${torch_extra[@]}" /usr/bin/python3 "$root/bench/torch_model_step.py" \
    "${flags[@]}" --modes=fp32,bf16 | sed "s/^/round=$r side=torch /" | tee -a "$log"
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

/usr/bin/python3 - "$log" <<'EOF'
import re, statistics, sys
wall, cpu = {}, {}
for line in open(sys.argv[1]):
    m = re.search(r"side=(\w+) (?:precision|mode)=(\w+) tokens_per_s=([\d.]+) .*"
                  r"cpu_tokens_per_s=([\d.]+)", line)
    if m:
        name = ("dsv3 " if m[1] == "dsv3" else "PyTorch ") + \
            ("bf16 autocast" if m[1] == "torch" and m[2] == "bf16" else m[2])
        wall.setdefault(name, []).append(float(m[3]))
        cpu.setdefault(name, []).append(float(m[4]))
torch_modes = ("PyTorch fp32", "PyTorch bf16 autocast")
med = {k: statistics.median(v) for k, v in wall.items()}
top = {k: max(v) for k, v in wall.items()}
cmed = {k: statistics.median(v) for k, v in cpu.items()}
fast_med, fast_top, fast_cpu = (max(d[t] for t in torch_modes) for d in (med, top, cmed))
print()
print("| mode | wall tokens/s, median of rounds | vs the faster PyTorch | best round | best vs best "
      "PyTorch | tokens per CPU-second, median | vs the faster PyTorch | wall tokens/s, each round |")
print("|---|---|---|---|---|---|---|---|")
for name in med:
    print(f"| {name} | {med[name]:,.0f} | {med[name] / fast_med:.2f}x | {top[name]:,.0f} "
          f"| {top[name] / fast_top:.2f}x | {cmed[name]:,.0f} | {cmed[name] / fast_cpu:.2f}x "
          f"| {', '.join(f'{x:,.0f}' for x in wall[name])} |")
EOF
