#!/usr/bin/env bash
# Installs the build dependencies (Debian), builds qembed, writes a random demo model and embeds
# two texts with it on the CPU backend. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="build-essential cmake ninja-build pkg-config libcriterion-dev libutf8proc-dev libcjson-dev
      libmicrohttpd-dev libcurl4-openssl-dev libblis-serial-dev"
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  dpkg -s $pkgs >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $pkgs >/dev/null; }
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
# tokenizer.json is written last: without it an earlier run stopped part-way, and --force redoes it
[ -f demo-model/tokenizer.json ] ||
  ./build/qembed make-random --preset tiny --out demo-model --force
printf '%s\n' '{"text": "What is the capital of France?"}' \
              '{"text": "Paris is the capital and largest city of France."}' |
  ./build/qembed embed --model demo-model --dims 32
