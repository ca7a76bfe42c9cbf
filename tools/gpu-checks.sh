#!/usr/bin/env bash
# gpu-checks.sh — every GPU check of qembed in ONE device call: stages estimated at 9.8 minutes,
# hard-capped at 9 by a `timeout` on every stage, each clamped to the time left of
# QE_GPU_CHECKS_BUDGET (530 s; a killed stage gets 5 s more to die, the digest at the end takes a
# second).
#
# On the GPU machine, from the repository root with devpack/ carried (tools/gpu-pack.sh made it):
#   device run: carry ["devpack"], timeout_s 590, command "bash tools/gpu-checks.sh"
# Here, without a GPU, the same script proves its plumbing (test: gpu_checks_dry, see below):
#   QE_GPU_CHECKS_DRY=1 QE_GPU_CHECKS_BUILD=build-h3 OUT=/tmp/gc bash tools/gpu-checks.sh
#
# Order (most important first, so a short call still says the most):
#   env.txt first (GPU, driver, clocks, power limit, libraries, `ldd` misses of every binary);
#   model generation (make-random 0.6b, 4b) in the background while the tests run;
#   correctness: test_kernels, test_cuda_engine, test_kernels_bench; the tests a suite reports as
#     [FAIL] suite::name rerun at once, one by one (at most 3 per suite), with
#     CUDA_LAUNCH_BLOCKING=1 under compute-sanitizer memcheck with --filter suite/name, so an
#     asynchronous fault is tied to a kernel and a line;
#   kernel benchmarks: bench_memops, bench_attention, bench_gemm_skinny, bench_gemm_fused,
#     bench_qgemm (the qgemm
#     kernel tests run in test_kernels above);
#   engine benchmarks: one `qembed bench` per model (opened once) with every target workload of
#     docs/benchmarks.md: L=512, L=2048, mix 16:512, a 32k document (chunked at the 16384-token
#     budget), a 24-token query with and without CUDA graphs, and profiles of L=512 and the query;
#   sanitizers on small cases: memcheck on a kernel subset, racecheck on two attention tests;
#   serving, if at least 60 s are left: qembed serve (4B, cuda) + loadgen, 64 clients x 16 inputs,
#     20 s; then, if 30 s are left, benchmarks/mixed_steps.py: a query beside 4 long documents.
#
# Estimated durations on the H200 (ESTIMATES, counted from each stage's work, not measured yet;
# replace them with summary.txt's seconds after the first call) and the stage timeouts:
#   stage                 estimate  timeout  work
#   env                       3 s      30 s   nvidia-smi queries, ldd of 6 binaries
#   make-random-0.6b          5 s     120 s   1.2 GB of random bf16 written to /tmp (background)
#   make-random-4b           25 s     180 s   8.0 GB likewise (background; 15 GB took 46 s on 2 cores)
#   quantize-4b-q4km         60 s     150 s   4.0 G weights through the single-threaded reference
#                                             quantizer, 2.5 GB written (background)
#   test_kernels             30 s     100 s   10 tests; the C references (attention at L = 2049,
#                                             8 heads: ~9 GFLOP on the CPU) dominate
#   test_cuda_engine         60 s     150 s   12 tests; the CPU backend as oracle: chunked prefill
#                                             runs 3000/2048-token sequences through it (~100 GFLOP)
#   test_kernels_bench        3 s      30 s   CPU only (FLOP counts, bench on a small model)
#   pdl-skinny-engine        25 s      90 s   3 test_cuda_engine tests, QE_PDL=1 QE_GEMM=skinny
#   rerun-memcheck:*         30 s      60 s   each, only for failed tests: at most 3 per suite
#                                             and 120 s in all
#   bench_memops             15 s      60 s   4 kernels at 16384 tokens of the 4B geometry, 50 reps;
#                                             filling ~0.9 GB of random inputs on the host first
#   bench_attention          55 s      90 s   every attention variant (fa2, m128, fa3): 7 lengths
#                                             (512..32768), 20 reps, 16384+ tokens each; a
#                                             1000-token CPU reference check first, per variant
#   bench_gemm_skinny         5 s      30 s   Qwen3-4B's 4 GEMM shapes at m = 1, 8, 24, 32, cuBLASLt
#                                             and the skinny path, 30 reps each (~20 us a call);
#                                             a 64-column CPU reference check per case first
#   bench_gemm_fused          5 s      30 s   Qwen3-4B's qkv and gate/up at m = 512, 4096, 16384:
#                                             cuBLASLt alone, + the separate epilogue kernel, the
#                                             fused kernel (gemm_fused.cu), 20 reps (<= 3 ms a
#                                             call); 8-row CPU reference checks first (~1 s of host
#                                             fill)
#   bench_qgemm              25 s      90 s   4 layers x 4 M x (bf16 + 3 types), 20 reps; quantizing
#                                             ~0.5 G random weights on the host first (~10 s)
#   bench-0.6b               20 s     120 s   load 1.2 GB; 8 workloads, ~0.4 s of GPU work each
#   bench-4b                 45 s     180 s   load 8 GB; 12 steps of 16384 tokens at ~190 ms each
#                                             per long workload, 4 x 32k tokens, 110 queries
#   variants-4b              20 s      60 s   load 8 GB; 4 x 55 queries (gemm=skinny, pdl=1, both,
#                                             skinny without graphs), a skinny profile, and
#                                             seq:512 / seq:2048 with attn=m128
#   hopper-4b                23 s      60 s   load 8 GB; seq:512 / 2048 with gemm=fused, attn=fa3,
#                                             and both; 55 queries with gemm=fused; seq:512 with
#                                             every candidate on (fa3, fused-skinny, pdl=1)
#   bench-4b-q4km            20 s      90 s   load 2.5 GB; 55 queries, 6 steps of 16384 tokens
#   mem-4b-q4km              10 s      45 s   load 2.5 GB at 2048 batch tokens, a 1024-token pool
#   dp-0.6b                  15 s      60 s   two engines on the one GPU (load 1.2 GB twice), 2
#                                             workloads alone and then both engines at once
#   tp1-nccl-0.6b            20 s      60 s   the same 2 workloads on one engine, plain and with
#                                             QE_CUDA_TP_NCCL=1 (one rank through NCCL): load
#                                             1.2 GB twice; the digest's tp1-nccl lines give the
#                                             cost (target < 2%)
#   memcheck-kernels         40 s      90 s   8 small kernel tests under memcheck (not gemm: cuBLAS;
#                                             not attention_causal_gqa: its 2049-token cases)
#   racecheck-attention      60 s     120 s   attention_alibi + attention_paged_and_chunked
#   serve-4b                 40 s     100 s   load 8 GB, 20 s of load (30 s before the variant
#                                             stages came: the budget's room for them), drain
#   mixed-4b                 35 s      90 s   load 8 GB; 4 x 32k-token documents (~3 s at 40k
#                                             tok/s) with 20 queries beside them
#   total (no failures)    ~9.5 min   530 s   the budget clamps every timeout to the time left
#                                             (estimates past 530 s: the last stages, serve-4b
#                                             and mixed-4b, are the ones skipped or cut short)
#                                             (the lease: ~3 min to start + this + the copies)
#
# What comes back ($OUT, at most 8 files): env.txt, summary.txt, tests.log, sanitizer.log,
# kernel-bench.log, engine-bench.log, serving.log. summary.txt gets one line per stage the moment
# the stage ends (name, rc, seconds, log; rc 124/137 = killed at its timeout, "skip" = no time
# left), so a call killed from outside still reports what ran; the results (test syntheses,
# sanitizer summaries, `result` lines, loadgen figures) are appended when the script ends.
#
# QE_GPU_CHECKS_DRY=1: the dry run of this machine (no GPU): binaries of a local build
# (QE_GPU_CHECKS_BUILD, default build), tiny random models, the CPU backend for bench and serve,
# compute-sanitizer replaced by running the program alone, QE_REQUIRE_GPU=1 kept so the GPU
# suites fail at once (exercising the reruns), stage timeouts of 30 s and 4 s for bench-4b whose
# 8192-token CPU workload outlasts it: it shows a killed stage recorded as rc=124 with the earlier
# workload's result kept, and the stages after it running. It then checks summary.txt (one line
# per stage) and $OUT (at most 8 files, plain names) and exits 1 if either is wrong. ~30 s
# (a 200 s budget: serving wants 60 s left, which a loaded machine eats into).
# QE_GPU_CHECKS_TIMEOUTS="stage=S,...": override stage timeouts (either mode).
# shellcheck disable=SC2317,SC2054 # the functions run through `bash -c`; commas are in specs
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ulimit -c 0

DRY=${QE_GPU_CHECKS_DRY:-0}
OUT=${OUT:-/tmp/qembed-gpu-checks}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qembed-gc.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if ((DRY)); then
  BUDGET=${QE_GPU_CHECKS_BUDGET:-200}
  BUILD=${QE_GPU_CHECKS_BUILD:-build}
  QEMBED=$BUILD/qembed
  T_KERNELS=$BUILD/tests/test_kernels T_ENGINE=$BUILD/tests/test_cuda_engine
  T_BENCH=$BUILD/tests/test_kernels_bench
  B_MEMOPS=$BUILD/benchmarks/bench_memops B_ATTN=$BUILD/benchmarks/bench_attention
  B_SKINNY=$BUILD/benchmarks/bench_gemm_skinny B_FUSED=$BUILD/benchmarks/bench_gemm_fused
  B_QGEMM=$BUILD/benchmarks/bench_qgemm
  BACKEND=cpu PRESET_SMALL=tiny PRESET_LARGE=tiny SERVE_SECONDS=2 SERVE_CLIENTS=8
  DEFAULT_TIMEOUTS="bench-4b=4"
  STAGE_CAP=30
else
  BUDGET=${QE_GPU_CHECKS_BUDGET:-530}
  P=devpack/bin
  QEMBED=$P/qembed T_KERNELS=$P/test_kernels T_ENGINE=$P/test_cuda_engine
  T_BENCH=$P/test_kernels_bench B_MEMOPS=$P/bench_memops B_ATTN=$P/bench_attention
  B_SKINNY=$P/bench_gemm_skinny B_FUSED=$P/bench_gemm_fused
  B_QGEMM=$P/bench_qgemm
  BACKEND=cuda PRESET_SMALL=0.6b PRESET_LARGE=4b SERVE_SECONDS=20 SERVE_CLIENTS=64
  DEFAULT_TIMEOUTS=""
  STAGE_CAP=100000
  [[ -x $QEMBED ]] || { echo "gpu-checks: $QEMBED missing: run tools/gpu-pack.sh here and carry devpack" >&2; exit 2; }
  # NCCL (which qembed links for tensor parallelism) is only inside the PyTorch wheel there
  NCCL_LIB=$(python3 -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))' 2>/dev/null || true)
  export LD_LIBRARY_PATH=$PWD/devpack/lib:/usr/local/cuda/lib64${NCCL_LIB:+:$NCCL_LIB}:${LD_LIBRARY_PATH:-}
  export PATH=/usr/local/cuda/bin:$PATH
  export QE_QEMBED=$PWD/$QEMBED QE_TINY_MODEL=$PWD/devpack/tiny
fi
export QE_REQUIRE_GPU=1 # a missing or broken device fails the GPU suites instead of skipping
CRITERION=(--verbose -j1 --color=never)
DEADLINE=$((SECONDS + BUDGET))
RERUN_BUDGET=120 RERUN_USED=0 # reruns of failed tests may not starve the benchmarks
TIMEOUTS=",${DEFAULT_TIMEOUTS},${QE_GPU_CHECKS_TIMEOUTS:-},"

# ------------------------------------------------------------------ stages

# One summary line, appended (one write, so the background job's lines do not tear) and echoed.
summary_line() { # name rc seconds log note
  local line
  line=$(printf '%-36s rc=%-4s %4ss  %-17s %s' "$1" "$2" "$3" "$4" "$5")
  printf '%s\n' "$line" >>"$OUT/summary.txt"
  printf 'gpu-checks: %s\n' "$line"
}

# The timeout of a stage: QE_GPU_CHECKS_TIMEOUTS's, else the default; dry runs cap it.
stage_timeout() { # name default
  local t=$2 o=${TIMEOUTS#*,"$1"=}
  [[ $o != "$TIMEOUTS" ]] && t=${o%%,*}
  ((t > STAGE_CAP)) && t=$STAGE_CAP
  echo "$t"
}

# Runs a command (a program or an exported function) under `timeout`, its timeout clamped to the
# time left, output appended to $OUT/LOG; writes the stage's summary line when it ends. Skips it,
# with a line saying so, when fewer than MIN seconds are left.
stage() { # name log timeout min command...
  local name=$1 log=$2 limit min=$4 left
  limit=$(stage_timeout "$1" "$3")
  shift 4
  left=$((DEADLINE - SECONDS))
  if ((left < min)); then
    summary_line "$name" skip 0 "$log" "skipped: ${left}s left of the ${BUDGET}s budget"
    return 0
  fi
  ((limit > left)) && limit=$left
  printf '\n==== %s (timeout %ss): %s\n' "$name" "$limit" "$*" >>"$OUT/$log"
  local t0=$SECONDS rc note=""
  timeout -k 5 "$limit" bash -c '"$@"' "$name" "$@" >>"$OUT/$log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && note="KILLED at its ${limit}s timeout"
  summary_line "$name" "$rc" $((SECONDS - t0)) "$log" "$note"
  return "$rc"
}

# compute-sanitizer TOOL over a program; in a dry run the program alone (no device to check).
sanitize() { # tool program args...
  local tool=$1
  shift
  if ((QE_GPU_CHECKS_DRY)); then
    echo "dry run: compute-sanitizer --tool $tool left out; the program runs alone"
    "$@"
    return
  fi
  compute-sanitizer --tool "$tool" --target-processes all --print-limit 20 --error-exitcode 99 "$@"
}

# A failed test again: every launch waits for its kernel, so a fault is reported at the launch.
memcheck_blocking() { # program args...
  export CUDA_LAUNCH_BLOCKING=1
  sanitize memcheck "$@"
}

# The failed tests of the suite output in LOG after byte OFFSET, as suite/name filters.
failed_tests() { # log offset
  tail -c +$(($2 + 1)) "$OUT/$1" |
    sed -n 's/^\[FAIL\] \([A-Za-z0-9_]*\)::\([A-Za-z0-9_]*\):.*/\1\/\2/p' | sort -u
}

# A Criterion suite, then each of its failed tests (at most 3) again, blocking launches, under
# memcheck, so an asynchronous fault names its kernel and line.
suite() { # name binary timeout
  local name=$1 bin=$2 offset t n=0
  if [[ ! -x $bin ]]; then
    summary_line "$name" skip 0 tests.log "skipped: $bin not built"
    return
  fi
  offset=$(stat -c %s "$OUT/tests.log" 2>/dev/null || echo 0)
  stage "$name" tests.log "$3" 10 "$bin" "${CRITERION[@]}" && return
  for t in $(failed_tests tests.log "$offset"); do
    if ((++n > 3 || RERUN_USED >= RERUN_BUDGET)); then
      summary_line "rerun-memcheck" skip 0 sanitizer.log "$name: later failures not rerun (3 per suite, ${RERUN_BUDGET}s in all)"
      break
    fi
    local t0=$SECONDS
    stage "rerun-memcheck:$t" sanitizer.log 60 10 memcheck_blocking "$bin" "${CRITERION[@]}" --filter "$t"
    RERUN_USED=$((RERUN_USED + SECONDS - t0))
  done
}

# qembed serve in the background on a free port, loadgen against it once it is ready, then
# SIGTERM (the server drains) and its exit status.
serve_and_load() { # model backend seconds corpus
  local err=$WORK/serve.err port="" rc
  "$QEMBED" serve --model "$1" --backend "$2" --port 0 --quiet 2>"$err" &
  local pid=$!
  for ((i = 0; i < 600; i++)); do # the port, then "ready" (the 4B model loads in seconds)
    grep -q "ready:" "$err" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$err" | head -1)
  cat "$err"
  if ! grep -q "ready:" "$err" || [[ -z $port ]]; then
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    return 3
  fi
  "$QEMBED" loadgen --url "http://127.0.0.1:$port/v1/embeddings" --corpus "$4" \
    --concurrency "$SERVE_CLIENTS" --inputs-per-request 16 --duration "$3" --max-seconds $(($3 + 20)) --timeout 20
  rc=$?
  kill -TERM "$pid"
  wait "$pid"
  local src=$?
  tail -n +2 "$err" | grep -v "ready:" | tail -3
  return $((rc ? rc : src))
}

# Everything about the machine that a reader of the figures needs; changes nothing on it.
environment() {
  date -u '+date       %Y-%m-%d %H:%M:%S UTC'
  echo "mode       $( ((QE_GPU_CHECKS_DRY)) && echo "dry run (no GPU)" || echo GPU)"
  echo "host       $(uname -srm), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
  [[ -f devpack/MANIFEST ]] && sed 's/^/devpack    /' devpack/MANIFEST
  if command -v nvidia-smi >/dev/null; then
    # queries only (METHOD.md: never change clocks, power limit or modes); the second query's
    # fields are asked apart so that one this driver lacks cannot lose the first line
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,power.max_limit,power.draw,temperature.gpu,persistence_mode,compute_mode,mig.mode.current --format=csv
    nvidia-smi -q -d CLOCK,POWER | grep -vE '^\s*$' | head -60
  else
    echo "nvidia-smi: not found"
  fi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -1
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldconfig -p | grep -E 'libcublasLt|libcudart|libcuda\.so' | head
  local b
  for b in "$QEMBED" "$T_KERNELS" "$T_ENGINE" "$T_BENCH" "$B_MEMOPS" "$B_ATTN" "$B_QGEMM"; do
    if [[ ! -e $b ]]; then
      echo "ldd $b: not built"
    elif ldd "$b" | grep -q "not found"; then
      ldd "$b" | grep "not found" | sed "s|^|ldd $b MISSING:|"
    else
      echo "ldd $b: no missing library"
    fi
  done
}

# A corpus for loadgen: the packed one (the shared bench corpus), else a small made-up one of
# short texts (a dry run needs no fixtures, and its CPU server answers short inputs in time).
corpus() {
  if ((!DRY)) && [[ -f devpack/corpus.jsonl ]]; then
    echo devpack/corpus.jsonl
    return
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    printf '{"text": "synthetic document %d: the quick brown fox jumps over the lazy dog %d times"}\n' "$i" "$i"
  done >"$WORK/corpus.jsonl"
  echo "$WORK/corpus.jsonl"
}

# Tensor parallel = 1 through the NCCL path (QE_CUDA_TP_NCCL=1: cuda_tp.c with one rank, its
# all-reduces included) against the plain path, the same workloads on one engine each way; one
# tp1-nccl line per workload with both tokens/s and the cost. The vectors are compared by
# test_cuda_engine (tp_one_rank_through_nccl_equals_plain).
tp1_cost() { # model backend bench-args...
  local model=$1 backend=$2
  shift 2
  "$QEMBED" bench --model "$model" --backend "$backend" "$@" >"$WORK/tp1-plain.txt" || return
  QE_CUDA_TP_NCCL=1 "$QEMBED" bench --model "$model" --backend "$backend" "$@" >"$WORK/tp1-nccl.txt" || return
  cat "$WORK/tp1-plain.txt" "$WORK/tp1-nccl.txt"
  paste -d '\n' <(grep '^result ' "$WORK/tp1-plain.txt") <(grep '^result ' "$WORK/tp1-nccl.txt") |
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
         NR % 2 == 1 { plain = f["tokens_per_s"]; next }
         { printf "tp1-nccl workload=%s plain_tokens_per_s=%s nccl_tokens_per_s=%s cost=%.2f%% (target < 2%%)\n",
             f["workload"], plain, f["tokens_per_s"], 100 * (plain - f["tokens_per_s"]) / plain }'
}

export -f sanitize memcheck_blocking serve_and_load environment tp1_cost
export QE_GPU_CHECKS_DRY=$DRY SERVE_CLIENTS QEMBED T_KERNELS T_ENGINE T_BENCH B_MEMOPS B_ATTN B_SKINNY B_QGEMM WORK

# ------------------------------------------------------------------ the checks

for f in env.txt summary.txt tests.log sanitizer.log kernel-bench.log engine-bench.log serving.log; do
  : >"$OUT/$f" # a local rerun into the same $OUT starts afresh (the device empties it anyway)
done
stage env env.txt 30 5 environment

# models: in the background while the tests run (disk- and CPU-bound, the GPU is free)
(
  stage make-random-0.6b engine-bench.log 120 10 "$QEMBED" make-random --preset "$PRESET_SMALL" --out "$WORK/m-small" --quiet
  stage make-random-4b engine-bench.log 180 10 "$QEMBED" make-random --preset "$PRESET_LARGE" --out "$WORK/m-large" --quiet
  stage quantize-4b-q4km engine-bench.log 150 10 "$QEMBED" quantize --model "$WORK/m-large" --type q4_k_m --out "$WORK/m-large-q4km.gguf" --quiet
) &
MODELS=$!

suite test_kernels "$T_KERNELS" 100
suite test_cuda_engine "$T_ENGINE" 150
suite test_kernels_bench "$T_BENCH" 30
# The engine tests that cover graphs, packing and the query shortcut again with programmatic
# dependent launch and the skinny GEMM's fused epilogues on (both off by default: docs/kernels.md):
# correct on the GPU before their timings below mean anything.
PDL_TESTS='cuda_engine/@(vs_cpu_gqa1_bf16|batching_invariance_and_shortcut|graphs_and_pipelined_steps_match_eager)'
stage pdl-skinny-engine tests.log 90 10 env QE_PDL=1 QE_GEMM=skinny "$T_ENGINE" "${CRITERION[@]}" --filter "$PDL_TESTS"

stage bench_memops kernel-bench.log 60 10 "$B_MEMOPS"
stage bench_attention kernel-bench.log 90 10 "$B_ATTN"
stage bench_gemm_skinny kernel-bench.log 30 10 "$B_SKINNY"
stage bench_gemm_fused kernel-bench.log 30 10 "$B_FUSED"
stage bench_qgemm kernel-bench.log 90 10 "$B_QGEMM" --reps 20

wait "$MODELS" # bounded: each generation has its own timeout
if ((DRY)); then
  BENCH_SMALL=(--batch-tokens 64 --iters 2 --warmup 1 --workload seq:16 --workload mix:4:32
    --workload seq:100,iters=1,warmup=0 --workload seq:24,batch=24,iters=3
    --workload seq:24,batch=24,iters=3,graphs=0 --workload seq:16,iters=1,profile=1)
  BENCH_LARGE=(--batch-tokens 64 --iters 1 --warmup 0 --workload seq:16
    --workload seq:8192) # the second outlasts the dry run's 4 s timeout on purpose
else
  BENCH_SMALL=(--batch-tokens 16384 --workload seq:512 --workload seq:2048 --workload mix:16:512
    --workload seq:32768,iters=3,warmup=1
    --workload seq:24,batch=24,iters=50,warmup=5
    --workload seq:24,batch=24,iters=50,warmup=5,graphs=0
    --workload seq:512,iters=3,warmup=1,profile=1
    --workload seq:24,batch=24,iters=20,warmup=2,profile=1)
  BENCH_LARGE=("${BENCH_SMALL[@]}")
fi
stage bench-0.6b engine-bench.log 120 15 "$QEMBED" bench --model "$WORK/m-small" --backend "$BACKEND" "${BENCH_SMALL[@]}"
stage bench-4b engine-bench.log 180 20 "$QEMBED" bench --model "$WORK/m-large" --backend "$BACKEND" "${BENCH_LARGE[@]}"
# The same 4B as Q4_K_M (kernels/qgemm.cu): the query latency, L=512 throughput against bench-4b's,
# and what the device holds at a serving size of 2048 batch tokens and a 1024-token pool.
if ((DRY)); then Q4KM=(--batch-tokens 64 --iters 1 --warmup 0 --workload seq:16); else
  Q4KM=(--batch-tokens 16384 --workload seq:24,batch=24,iters=50,warmup=5 --workload seq:512,iters=5,warmup=1); fi
stage bench-4b-q4km engine-bench.log 90 15 "$QEMBED" bench --model "$WORK/m-large-q4km.gguf" --backend "$BACKEND" "${Q4KM[@]}"
stage mem-4b-q4km engine-bench.log 45 10 "$QEMBED" bench --model "$WORK/m-large-q4km.gguf" --backend "$BACKEND" \
  --batch-tokens 2048 --kv-pool-tokens 1024 --iters 3 --warmup 1 --workload seq:24,batch=24
# The kernel variants of issue 15 (docs/kernels.md), each a workload's attn= / gemm= / pdl= on
# one 4B engine (graphs are keyed by the switches), beside bench-4b's default lines: attention
# variant m128 and the query on the skinny GEMM path (with its fused epilogues) and with
# programmatic dependent launch; then, in a stage of their own so that a fault in one of the new
# sm_90a kernels cannot cost the others' lines, the wgmma GEMM with fused epilogues and the
# FA3-style attention. (The CPU backend of a dry run ignores the switches; the stages still prove
# their plumbing.)
if ((DRY)); then
  VARIANTS=(--batch-tokens 64 --iters 1 --warmup 0 --workload seq:16,attn=m128
    --workload seq:16,gemm=skinny,pdl=1)
  HOPPER=(--batch-tokens 64 --iters 1 --warmup 0 --workload seq:16,gemm=fused
    --workload seq:16,attn=fa3 --workload seq:16,gemm=fused-skinny,pdl=1)
else
  Q=seq:24,batch=24,iters=50,warmup=5
  VARIANTS=(--batch-tokens 16384 --workload "$Q,gemm=skinny" --workload "$Q,pdl=1"
    --workload "$Q,gemm=skinny,pdl=1" --workload "$Q,gemm=skinny,graphs=0"
    --workload seq:24,batch=24,iters=20,warmup=2,profile=1,gemm=skinny
    --workload seq:512,attn=m128 --workload seq:2048,attn=m128)
  HOPPER=(--batch-tokens 16384 --workload seq:512,gemm=fused --workload seq:2048,gemm=fused
    --workload seq:512,attn=fa3 --workload seq:2048,attn=fa3
    --workload seq:512,attn=fa3,gemm=fused --workload "$Q,gemm=fused"
    --workload seq:512,attn=fa3,gemm=fused-skinny,pdl=1)
fi
stage variants-4b engine-bench.log 60 10 "$QEMBED" bench --model "$WORK/m-large" --backend "$BACKEND" \
  "${VARIANTS[@]}"
stage hopper-4b engine-bench.log 60 10 "$QEMBED" bench --model "$WORK/m-large" --backend "$BACKEND" \
  "${HOPPER[@]}"
# Two engines sharing the one GPU (qembed serve --devices 0,0): their tokens/s together against
# one engine's (the result_dp line); on a multi-GPU machine --devices 0,1 gives the DP scaling.
if ((DRY)); then DP=(--batch-tokens 64 --iters 1 --warmup 0 --workload seq:16); else
  DP=(--batch-tokens 16384 --workload seq:512,iters=5,warmup=1 --workload seq:24,batch=24,iters=20); fi
stage dp-0.6b engine-bench.log 60 10 "$QEMBED" bench --model "$WORK/m-small" --backend "$BACKEND" \
  --devices 0,0 "${DP[@]}"
# A 2% difference wants more calls than the DP stage's: medians of 20 long and 100 query calls.
if ((DRY)); then TP1=("${DP[@]}"); else
  TP1=(--batch-tokens 16384 --workload seq:512,iters=20,warmup=3
    --workload seq:24,batch=24,iters=100,warmup=10); fi
stage tp1-nccl-0.6b engine-bench.log 60 15 tp1_cost "$WORK/m-small" "$BACKEND" "${TP1[@]}"

KSUB='kernels/@(embed_gather|add_rmsnorm|qk_norm_rope|swiglu|pool_last_and_gather|attention_alibi|attention_paged_and_chunked|launcher_argument_errors)'
stage memcheck-kernels sanitizer.log 90 15 sanitize memcheck "$T_KERNELS" "${CRITERION[@]}" --filter "$KSUB"
stage racecheck-attention sanitizer.log 120 15 sanitize racecheck "$T_KERNELS" "${CRITERION[@]}" \
  --filter 'kernels/@(attention_alibi|attention_paged_and_chunked)'

stage serve-4b serving.log 100 60 serve_and_load "$WORK/m-large" "$BACKEND" "$SERVE_SECONDS" "$(corpus)"
# A short query beside 4 long documents (mixed steps, docs/benchmarks.md): its latency vs the
# steps' time, and the documents' throughput through the K/V pool.
if ((DRY)); then MIXED=(--doc-len 512 --batch-tokens 64 --queries 3); else
  MIXED=(--doc-len 32768 --batch-tokens 16384 --queries 20); fi
if command -v python3 >/dev/null; then
  stage mixed-4b serving.log 90 30 python3 benchmarks/mixed_steps.py --qembed "$QEMBED" \
    --backend "$BACKEND" --model "$WORK/m-large" --docs 4 "${MIXED[@]}"
else
  summary_line mixed-4b skip 0 serving.log "no python3 on this machine"
fi

# ------------------------------------------------------------------ the digest

{
  echo "---- results"
  grep -h "Synthesis" "$OUT/tests.log" "$OUT/sanitizer.log" 2>/dev/null
  grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$OUT/sanitizer.log" 2>/dev/null
  grep -hE "^check .*FAIL|FAIL$" "$OUT/kernel-bench.log" 2>/dev/null
  grep -hE "^(gpu|workload|graphs|result|tp1-nccl) " "$OUT/engine-bench.log" 2>/dev/null
  grep -hE "^(throughput|latency|errors|requests|documents|queries|result) " "$OUT/serving.log" 2>/dev/null
} >>"$OUT/summary.txt"

# $OUT must come back whole: at most 8 files, plain names, at most 2 folders down.
out_ok=1
n_out=$(find "$OUT" -type f | wc -l)
((n_out > 8)) && { echo "gpu-checks: $OUT holds $n_out files (at most 8 come back)"; out_ok=0; }
if find "$OUT" -mindepth 1 | sed "s|^$OUT/||" | grep -q '[^A-Za-z0-9._/-]'; then
  echo "gpu-checks: a name under $OUT has characters that do not come back"
  out_ok=0
fi
cat "$OUT/summary.txt"

((DRY)) || exit 0
# The dry run checks its own plumbing: one line per stage, the killed stage recorded as killed
# and the stages after it run, the earlier workload's result kept.
dry_ok=$out_ok
for s in env make-random-0.6b make-random-4b quantize-4b-q4km test_kernels test_cuda_engine \
  test_kernels_bench bench_memops bench_attention bench_gemm_skinny bench_gemm_fused bench_qgemm \
  bench-0.6b bench-4b bench-4b-q4km mem-4b-q4km variants-4b hopper-4b pdl-skinny-engine dp-0.6b \
  tp1-nccl-0.6b memcheck-kernels racecheck-attention serve-4b mixed-4b; do
  got=$(grep -c "^$s  *rc=" "$OUT/summary.txt")
  ((got == 1)) || { echo "dry run: $got summary lines for stage $s (want 1)"; dry_ok=0; }
done
grep -qE "^bench-4b  *rc=(124|137) .*KILLED" "$OUT/summary.txt" ||
  { echo "dry run: bench-4b was not recorded as killed at its timeout"; dry_ok=0; }
# (grep reads to the end: with -q it would stop early and, under pipefail, sed's SIGPIPE fails it)
sed -n '/^==== bench-4b /,$p' "$OUT/engine-bench.log" | grep "^result .*workload=seq:16 " >/dev/null ||
  { echo "dry run: the killed bench lost its finished workload's result"; dry_ok=0; }
if [[ -x $T_KERNELS ]]; then # QE_REQUIRE_GPU=1 without a GPU: every kernel test fails
  grep -qE "^rerun-memcheck:kernels/[a-z_]+  *rc=" "$OUT/summary.txt" ||
    { echo "dry run: no failed test was rerun under the sanitizer"; dry_ok=0; }
fi
grep -qE "^serve-4b  *rc=0 " "$OUT/summary.txt" || { echo "dry run: serving failed"; dry_ok=0; }
grep -qE "^tp1-nccl workload=seq:16 .*cost=" "$OUT/summary.txt" ||
  { echo "dry run: no tp1-nccl line in the digest"; dry_ok=0; }
grep -qE "^mixed-4b  *rc=(0|skip) " "$OUT/summary.txt" || { echo "dry run: mixed steps failed"; dry_ok=0; }
((dry_ok)) && echo "gpu-checks dry run: plumbing ok" && exit 0
echo "gpu-checks dry run: FAILED (see above)"
exit 1
