#!/usr/bin/env bash
# gpu-pack.sh — run HERE (no GPU needed), before a GPU lease: builds the CUDA binaries for Hopper
# (sm_90a) and packs them into devpack/ (git-ignored) with every shared library they need that
# the GPU machine lacks, the tiny fixture, the bench corpus and a MANIFEST (commit, build, date),
# then checks what a lease cannot afford to find out there:
#   - no packed binary has an `ldd` miss against devpack/lib + the system (the CUDA libraries
#     come from the GPU machine's /usr/local/cuda);
#   - devpack plus the working tree that travels fit the device call's 64 MiB;
#   - the dry run of tools/gpu-checks.sh passes on this build (its stages, timeouts and $OUT
#     limits; ~20 s; QE_PACK_NO_DRY=1 skips it).
# Then one device call runs every check (tools/gpu-checks.sh says what and how long):
#   device run: carry ["devpack"], timeout_s 560, command "bash tools/gpu-checks.sh"
# QE_PACK_BUILD=DIR builds in DIR instead of build-cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${QE_PACK_BUILD:-build-cuda}
SHARED=${QE_SHARED_DIR:-../shared}

cmake -S . -B "$BUILD" -G Ninja -DQE_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
grep -q '^QE_CUDA:BOOL=ON' "$BUILD/CMakeCache.txt" ||
  { echo "gpu-pack: $BUILD was configured without CUDA (no nvcc?)" >&2; exit 1; }

rm -rf devpack
"$SHARED/tools/device-pack.sh" devpack "$BUILD/qembed" "$BUILD/tests/test_kernels" \
  "$BUILD/tests/test_cuda_engine" "$BUILD/tests/test_kernels_bench"
# The benchmarks need no library beyond the system's (device-pack.sh stops on a binary whose
# ldd list it filters to nothing), so they are copied as they are.
cp "$BUILD/benchmarks/bench_attention" "$BUILD/benchmarks/bench_memops" \
  "$BUILD/benchmarks/bench_gemm_skinny" "$BUILD/benchmarks/bench_gemm_fused" \
  "$BUILD/benchmarks/bench_qgemm" devpack/bin/
mkdir -p devpack/tiny
cp "$SHARED"/fixtures/tiny-qwen3-embed/{config.json,model.safetensors,golden.json} devpack/tiny/
cp "$SHARED/bench/corpus.jsonl" devpack/ # the serving workload for loadgen

{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!devpack' || echo ' + uncommitted changes')"
  echo "built  $(date -u '+%Y-%m-%d %H:%M UTC') in $BUILD, $(grep -m1 '^CMAKE_BUILD_TYPE' "$BUILD/CMakeCache.txt" | cut -d= -f2)"
  echo "cuda   $(grep -o -- '--generate-code=arch=[a-z_0-9]*,code=\[[a-z_0-9,]*\]' "$BUILD/build.ninja" | sort -u | tr '\n' ' ')$(/usr/local/cuda/bin/nvcc --version | tail -1)"
} >devpack/MANIFEST

# Every binary must resolve its libraries from devpack/lib and what the GPU machine has.
missing=0
for b in devpack/bin/*; do
  if LD_LIBRARY_PATH=$PWD/devpack/lib:/usr/local/cuda/lib64 ldd "$b" | grep -q "not found"; then
    echo "gpu-pack: $b has missing libraries:" >&2
    LD_LIBRARY_PATH=$PWD/devpack/lib ldd "$b" | grep "not found" >&2
    missing=1
  fi
done
((missing == 0)) || exit 1

# What a device call sends: tracked and untracked-not-ignored files, plus the carried devpack.
tree_bytes=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
pack_bytes=$(du -sb devpack | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "gpu-pack: devpack $(mib "$pack_bytes") MiB + working tree $(mib "$tree_bytes") MiB = $(mib $((tree_bytes + pack_bytes))) MiB of the 64 MiB a call carries"
((tree_bytes + pack_bytes < 64 * 1048576)) || { echo "gpu-pack: too large to carry" >&2; exit 1; }

if [[ ${QE_PACK_NO_DRY:-0} != 1 ]]; then
  dry_out=$(mktemp -d)
  QE_GPU_CHECKS_DRY=1 QE_GPU_CHECKS_BUILD=$BUILD OUT=$dry_out bash tools/gpu-checks.sh >"$dry_out.log" 2>&1 ||
    { tail -30 "$dry_out.log" >&2; echo "gpu-pack: the dry run of gpu-checks.sh failed" >&2; exit 1; }
  tail -1 "$dry_out.log"
  rm -rf "$dry_out" "$dry_out.log"
fi
echo "gpu-pack: ready: device run with carry [\"devpack\"], timeout_s 560, command \"bash tools/gpu-checks.sh\""
