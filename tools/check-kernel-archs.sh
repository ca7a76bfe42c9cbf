#!/usr/bin/env bash
# Compiles every CUDA kernel file for GPUs other than the default sm_90a, device code only, with
# every warning an error: sm_80 (A100, A10 class) and sm_86 (RTX 30xx, where a 4-bit GGUF model
# fits). The sm_90a-only kernels must build there as traps that are never launched (fa3, the
# fused GEMM), and the sm_90 instructions the others use (griddepcontrol) must vanish, so a user
# who sets CMAKE_CUDA_ARCHITECTURES for an older GPU gets a build. No GPU needed; ~80 s on 2 cores.
# Usage: tools/check-kernel-archs.sh [NVCC] [ARCH ...]
set -euo pipefail
cd "$(dirname "$0")/../kernels"
NVCC=${1:-/usr/local/cuda/bin/nvcc}
shift || true
ARCHS=("$@")
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(80 86)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail=0
for arch in "${ARCHS[@]}"; do
    failed=0
    for f in *.cu; do
        if ! "$NVCC" -I. --expt-relaxed-constexpr -O3 -Werror all-warnings -cubin -arch="sm_$arch" \
            -o "$scratch/${f%.cu}.cubin" "$f" 2>"$scratch/log"; then
            echo "sm_$arch $f: FAILED"
            sed 's/^/    /' "$scratch/log"
            fail=1 failed=$((failed + 1))
        fi
    done
    echo "sm_$arch: $(ls *.cu | wc -l) kernel files, $failed failed"
done
exit $fail
