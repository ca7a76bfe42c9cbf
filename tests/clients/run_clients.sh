#!/usr/bin/env bash
# run_clients.sh QEMBED SCRATCH — real client SDKs against a qembed server, as an optional test:
# exit 77 (skipped) unless node and the pinned packages are installed in tests/clients:
#   npm install --prefix tests/clients cohere-ai@7.21.0
# Starts a server on a random reranker from make-random, runs each client script, stops it.
set -euo pipefail
qembed=$1 scratch=$2
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null || [ ! -d "$here/node_modules/cohere-ai" ]; then
  echo "skipped: needs node and 'npm install --prefix tests/clients cohere-ai@7.21.0'"
  exit 77
fi
rm -rf "$scratch" && mkdir -p "$scratch"
"$qembed" make-random --preset tiny --task rerank --out "$scratch/reranker" --quiet
"$qembed" serve --model "$scratch/reranker" --served-model-name reranker --port 0 --quiet \
  2> "$scratch/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do # the port from the startup line, then the ready line
  grep -q "ready:" "$scratch/serve.log" 2>/dev/null && break
  sleep 0.1
done
port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$scratch/serve.log")
[ -n "$port" ] || { cat "$scratch/serve.log"; exit 1; }
node "$here/cohere_rerank.mjs" "http://127.0.0.1:$port" reranker
