#!/usr/bin/env bash
# Sets up, builds, and runs every dsv3 test (unit, integration, reference). Exits non-zero on any
# failure. Quick when everything is installed and built.
set -euo pipefail
cd "$(dirname "$0")/.."
# oneDNN runs on OpenMP, whose threads spin while waiting by default and then starve when several
# processes share the cores (measured: 2-thread GEMMs fall from ~350 to 1-30 GFLOP/s).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
start=$(date +%s)
scripts/bootstrap.sh
scripts/build.sh
echo "[test] running the test suite (ctest)"
set +e
ctest --test-dir "${DSV3_BUILD_DIR:-build}" --output-on-failure -j "${DSV3_TEST_JOBS:-2}" \
  --timeout 600 "$@"
rc=$?
set -e
echo "[test] finished in $(( $(date +%s) - start )) s: $([ $rc -eq 0 ] && echo ALL PASSED || echo FAILURES, exit $rc)"
exit $rc
