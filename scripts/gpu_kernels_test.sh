#!/usr/bin/env bash
# Builds the kernels folder on its own and runs its tests, CUDA tests included: the command for a
# GPU machine that has CMake, ninja, nvcc and Python with torch but no GoogleTest package or gRPC.
#   scripts/gpu_kernels_test.sh [GOOGLETEST_SOURCE_DIR]   (default /usr/src/googletest)
set -euo pipefail
cd "$(dirname "$0")/.."
gtest=${1:-/usr/src/googletest}
build=${DSV3_KERNELS_BUILD_DIR:-/tmp/dsv3-kernels-build}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cmake -S kernels -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DDSV3_GOOGLETEST_SOURCE_DIR="$gtest" -DDSV3_TORCH_PYTHON="$(command -v python3)"
ninja -C "$build"
ctest --test-dir "$build" --output-on-failure -j4
