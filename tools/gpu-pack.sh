#!/usr/bin/env bash
# Run HERE (no GPU needed): builds the CUDA binaries for Hopper and packs them, with the libraries
# they need and the tiny fixture, into devpack/ (git-ignored), ready to carry to the GPU machine:
#   device run: carry ["devpack"], command "bash tools/gpu-checks.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-cuda -G Ninja -DQE_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-cuda -j "$(nproc)"
rm -rf devpack
../shared/tools/device-pack.sh devpack build-cuda/qembed build-cuda/tests/test_kernels \
  build-cuda/tests/test_cuda_engine build-cuda/tests/test_kernels_bench
# The benchmarks need no library beyond the system's (device-pack.sh stops on a binary whose
# ldd list it filters to nothing), so they are copied as they are.
cp build-cuda/benchmarks/bench_attention build-cuda/benchmarks/bench_memops devpack/bin/
mkdir -p devpack/tiny
cp ../shared/fixtures/tiny-qwen3-embed/{config.json,model.safetensors,golden.json} devpack/tiny/
cp ../shared/bench/corpus.jsonl devpack/   # the serving workload for loadgen
du -sh devpack
