#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repository root, with devpack/ carried (tools/gpu-pack.sh).
# One call does every check of issue #4 in order: kernel tests, engine tests, compute-sanitizer,
# kernel benchmarks, engine benchmarks. Logs go to $OUT (at most 8 files come back); a short
# summary is printed last. Stages after a failing test stage still run, so one call tells all.
set -uo pipefail
OUT=${OUT:-/tmp/qembed-gpu}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/devpack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export QE_QEMBED=$PWD/devpack/bin/qembed QE_TINY_MODEL=$PWD/devpack/tiny QE_REQUIRE_GPU=1
B=devpack/bin
summary=()
stage() { # name, log, command...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" >>"$OUT/$log" 2>&1; local rc=$?
  summary+=("$(printf '%-28s rc=%-3s %4ss  (%s)' "$name" "$rc" $((SECONDS - t0)) "$log")")
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
stage "test_kernels"        tests.log  $B/test_kernels --verbose -j1
stage "test_cuda_engine"    tests.log  $B/test_cuda_engine --verbose -j1
stage "test_kernels_bench"  tests.log  $B/test_kernels_bench -j1
stage "memcheck kernels"    sanitizer.log compute-sanitizer --tool memcheck $B/test_kernels -j1
stage "racecheck attention" sanitizer.log compute-sanitizer --tool racecheck $B/test_kernels -j1 --filter 'kernels/attention_*'
stage "memcheck engine"     sanitizer.log compute-sanitizer --tool memcheck $B/test_cuda_engine -j1 --filter 'cuda_engine/tiny_*'
stage "memcheck graphs"     sanitizer.log compute-sanitizer --tool memcheck $B/test_cuda_engine -j1 --filter 'cuda_engine/graphs_*'
stage "bench_memops"        kernel-bench.log $B/bench_memops
stage "bench_attention"     kernel-bench.log $B/bench_attention
for p in 0.6b 4b; do
  stage "make-random $p" engine-bench.log $B/qembed make-random --preset $p --out /tmp/m$p --quiet
done
stage "0.6b L=512"   engine-bench.log $B/qembed bench --model /tmp/m0.6b --seq-len 512 --profile
stage "0.6b L=2048"  engine-bench.log $B/qembed bench --model /tmp/m0.6b --seq-len 2048
stage "0.6b query24" engine-bench.log $B/qembed bench --model /tmp/m0.6b --seq-len 24 --batch-tokens 24 --iters 50
stage "0.6b query24 no graphs" engine-bench.log env QE_CUDA_GRAPHS=0 $B/qembed bench --model /tmp/m0.6b --seq-len 24 --batch-tokens 24 --iters 50
stage "4b L=512"     engine-bench.log $B/qembed bench --model /tmp/m4b --seq-len 512 --profile
stage "4b L=2048"    engine-bench.log $B/qembed bench --model /tmp/m4b --seq-len 2048
stage "4b mix"       engine-bench.log $B/qembed bench --model /tmp/m4b --mix 16:512
stage "4b 32k doc"   engine-bench.log $B/qembed bench --model /tmp/m4b --seq-len 32768 --iters 3 --warmup 1
stage "4b query24"   engine-bench.log $B/qembed bench --model /tmp/m4b --seq-len 24 --batch-tokens 24 --iters 50
stage "4b query24 no graphs" engine-bench.log env QE_CUDA_GRAPHS=0 $B/qembed bench --model /tmp/m4b --seq-len 24 --batch-tokens 24 --iters 50
stage "4b query24 profile" engine-bench.log $B/qembed bench --model /tmp/m4b --seq-len 24 --batch-tokens 24 --iters 50 --profile
# Serving: 64 concurrent clients on the 4B model, to set beside the offline mix figure above.
serve_and_load() {
  $B/qembed serve --model /tmp/m4b --backend cuda --port 18080 --quiet &
  local pid=$!
  python3 - <<'PY'  # wait for /health 200 (the 4B model takes a while to load)
import time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen("http://127.0.0.1:18080/health", timeout=2).status == 200: break
    except Exception: pass
    time.sleep(0.5)
PY
  $B/qembed loadgen --url http://127.0.0.1:18080/v1/embeddings --corpus devpack/corpus.jsonl \
    --concurrency 64 --inputs-per-request 16 --duration 60
  local rc=$?
  kill -TERM $pid; wait $pid
  return $rc
}
stage "serve 4b, 64 clients" serving.log serve_and_load
{
  cat "$OUT/gpu.txt"
  printf '%s\n' "${summary[@]}"
  grep -h "Synthesis" "$OUT/tests.log"
  grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log"
  grep -h "^result" "$OUT/engine-bench.log"
  grep -hE "throughput|latency|errors" "$OUT/serving.log"
} | tee "$OUT/summary.txt"
