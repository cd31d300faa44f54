#!/usr/bin/env bash
# Configures and builds dsv3 into build/ (Ninja, ccache when present). Extra arguments go to ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DSV3_BUILD_DIR:-build}
JOBS=${DSV3_JOBS:-$(nproc)}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${DSV3_BUILD_TYPE:-RelWithDebInfo}
fi
cmake --build "$BUILD_DIR" -j "$JOBS" -- "$@"
