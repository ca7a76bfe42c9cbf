#!/usr/bin/env bash
# Builds qembed (Release) and runs every test suite. GPU suites skip with a message where no GPU
# is present; suites whose fixture (../shared beside the project) is absent skip likewise.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j 1
