#!/usr/bin/env bash
# Debian's libxsmm beside fl_gemm's AVX-512 and AVX2 kernels and OpenBLAS on
# the training products (issue 14): installs libxsmm-dev if missing (a
# benchmark-only package, not a dependency of fedlr), builds bench_xsmm and
# runs it twice: as is (the CPU's best kernels), and with OpenBLAS's and
# libxsmm's AVX2 code forced (OPENBLAS_CORETYPE=Haswell, LIBXSMM_TARGET=hsw),
# an indication for AVX2-only CPUs. Prints Markdown (bench/RESULTS.md keeps a
# copy). Not a test: numbers depend on the machine and its load.
#   bench/bench_xsmm.sh [BUILD_DIR]
# BENCH_CPU=N pins the runs to core N (taskset); BENCH_JOBS sets the build's
# parallelism (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
if ! dpkg-query -W -f='${Status}' libxsmm-dev 2>/dev/null | grep -q "install ok installed"; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bench_xsmm: installing libxsmm-dev" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libxsmm-dev >/dev/null
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target bench_xsmm -j "${BENCH_JOBS:-1}" >/dev/null
PIN=()
if [ -n "${BENCH_CPU:-}" ]; then PIN=(taskset -c "$BENCH_CPU"); fi

echo "## libxsmm against fl_gemm and OpenBLAS, $(date -u +%Y-%m-%d), $(nproc) cores"
echo
echo "### The CPU's best kernels"
echo
"${PIN[@]}" "$BUILD/bench/bench_xsmm"
echo
echo "### AVX2 code forced (OPENBLAS_CORETYPE=Haswell, LIBXSMM_TARGET=hsw)"
echo
OPENBLAS_CORETYPE=Haswell LIBXSMM_TARGET=hsw "${PIN[@]}" "$BUILD/bench/bench_xsmm"
