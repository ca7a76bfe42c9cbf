#!/usr/bin/env bash
# run_crosscheck.sh QEMBED SCRATCH [TEST_CUDA_EMU] — optional: does llama.cpp load what `qembed
# quantize` writes, and embed it (and, for a reranker, score it) like qembed; and do the files
# llama.cpp's own quantizer writes run in qembed (CPU, and the emulated CUDA backend when
# TEST_CUDA_EMU is given)? Needs node and node-llama-cpp@3.21.1 (prebuilt CPU binaries) in
# $QE_NODE_LLAMA_CPP (a node_modules folder; default /tmp/llama-bench/node_modules, as
# benchmarks/llamacpp/README.md installs it). Exits 77 (skipped) when either is absent.
set -euo pipefail
qembed=$1 scratch=$2 cuda_emu=${3:-} # test_cuda_emu, when the emulator is built
here=$(cd "$(dirname "$0")" && pwd)
modules=${QE_NODE_LLAMA_CPP:-/tmp/llama-bench/node_modules}
if ! command -v node >/dev/null || [ ! -f "$modules/node-llama-cpp/dist/index.js" ]; then
  echo "skipped: node or node-llama-cpp absent (npm install node-llama-cpp@3.21.1 into $modules)"
  exit 77
fi
rm -rf "$scratch" && mkdir -p "$scratch"
# 256-wide rows, so q4_k_m really uses Q4_K / Q6_K (the tiny preset's 64 would fall back to Q8_0)
cat > "$scratch/config.json" <<'JSON'
{"architectures": ["Qwen3Model"], "model_type": "qwen3", "vocab_size": 151669, "hidden_size": 256,
 "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 2,
 "num_key_value_heads": 1, "head_dim": 128, "hidden_act": "silu",
 "max_position_embeddings": 4096, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
 "tie_word_embeddings": true, "attention_bias": false, "torch_dtype": "bfloat16"}
JSON
"$qembed" make-random --config "$scratch/config.json" --out "$scratch/m" --seed 3 --quiet
printf '%s\n' '{"ids": [1, 2, 3, 151643]}' '{"ids": [220, 198, 7, 8, 9, 10, 11, 12, 13, 151643]}' \
  '{"ids": [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 151643]}' \
  > "$scratch/ids.jsonl"
# and the tiny preset's 64- and 192-wide rows, whose q4_k_m falls back to Q5_0 and Q8_0
"$qembed" make-random --preset tiny --out "$scratch/t" --seed 4 --quiet
rc=0
for run in m:q8_0 m:q4_k_m t:q4_k_m; do
  dir=${run%%:*} type=${run##*:}
  "$qembed" quantize --model "$scratch/$dir" --type "$type" --out "$scratch/$dir-$type.gguf" --quiet
  "$qembed" embed --model "$scratch/$dir-$type.gguf" --input "$scratch/ids.jsonl" \
    --output "$scratch/ours-$dir-$type.jsonl" --threads 2
  node "$here/gguf_crosscheck.mjs" --node-modules "$modules" --gguf "$scratch/$dir-$type.gguf" \
    --ids "$scratch/ids.jsonl" --qembed "$scratch/ours-$dir-$type.jsonl" --min-cosine 0.999 || rc=1
done
# Files llama.cpp quantized itself (llama_model_quantize from an f16 file of ours): qembed loads them
# and gives llama.cpp's vectors, and our q4_k_m recipe picks the same type for every tensor as
# llama.cpp's (also on a 28-layer model, where use_more_bits picks 10 of 28 layers).
lib=$(ls "$modules"/@node-llama-cpp/linux-x64/bins/linux-x64/libllama*.so 2>/dev/null | head -1 || true)
if [[ -n $lib ]] && command -v cc >/dev/null; then
  cc -O1 -o "$scratch/llama_quantize" "$here/llama_quantize.c" -ldl
  types_of() { "$qembed" inspect --model "$1" --tensors |
    awk '/^  (blk|token_embd|output)/ && $3 ~ /^\[/ { print $1, $2 }' | sort; }
  sed -e 's/"num_hidden_layers": 4/"num_hidden_layers": 28/' -e 's/"vocab_size": 151669/"vocab_size": 4096/' \
    "$scratch/config.json" > "$scratch/config-28.json"
  "$qembed" make-random --config "$scratch/config-28.json" --out "$scratch/d" --seed 7 --quiet
  for run in m:7:q8_0 m:15:q4_k_m d:15:q4_k_m; do
    IFS=: read -r dir ftype type <<<"$run"
    "$qembed" quantize --model "$scratch/$dir" --type f16 --out "$scratch/$dir-f16.gguf" --quiet
    [[ -f $scratch/$dir-$type.gguf ]] ||
      "$qembed" quantize --model "$scratch/$dir" --type "$type" --out "$scratch/$dir-$type.gguf" --quiet
    LD_LIBRARY_PATH=$(dirname "$lib") "$scratch/llama_quantize" "$lib" "$scratch/$dir-f16.gguf" \
      "$scratch/$dir-llama-$type.gguf" "$ftype" >"$scratch/llama-quantize.log" 2>&1 ||
      { cat "$scratch/llama-quantize.log"; rc=1; continue; }
    if ! diff <(types_of "$scratch/$dir-llama-$type.gguf") <(types_of "$scratch/$dir-$type.gguf"); then
      echo "$dir $type: tensor types differ from llama.cpp's (<: llama.cpp, >: qembed)"; rc=1
    else
      echo "$dir $type: every tensor's type as llama.cpp's quantizer chose it"
    fi
    [[ $dir == m ]] || continue
    if [[ -n $cuda_emu ]]; then # the emulated CUDA backend on llama.cpp's file vs the CPU backend
      QE_LLAMACPP_GGUF="$scratch/$dir-llama-$type.gguf" "$cuda_emu" \
        --filter 'cuda_emu/llamacpp_quantized_file_matches_cpu' --verbose 2>&1 |
        grep -E "worst cosine|Synthesis" || rc=1
      QE_LLAMACPP_GGUF="$scratch/$dir-llama-$type.gguf" "$cuda_emu" \
        --filter 'cuda_emu/llamacpp_quantized_file_matches_cpu' >/dev/null 2>&1 || rc=1
    fi
    "$qembed" embed --model "$scratch/$dir-llama-$type.gguf" --input "$scratch/ids.jsonl" \
      --output "$scratch/ours-llama-$type.jsonl" --threads 2
    node "$here/gguf_crosscheck.mjs" --node-modules "$modules" --gguf "$scratch/$dir-llama-$type.gguf" \
      --ids "$scratch/ids.jsonl" --qembed "$scratch/ours-llama-$type.jsonl" --min-cosine 0.999 || rc=1
  done
else
  echo "skipped: no libllama in $modules or no C compiler (llama.cpp's own quantized files)"
fi
# Rerankers in llama.cpp's form (pooling rank, cls.output.weight, the template in
# tokenizer.chat_template.rerank): llama.cpp's ranking of the very ids qembed scored. Compared as
# logits, relative: f32 within 1e-3; quantized within 0.045, the embedding check's bar (cosine
# 0.999: llama.cpp quantizes activations in its dot products) carried to one projection of the
# hidden state, whose relative error is about sqrt(2 (1 - cosine)).
sed -e 's/"Qwen3Model"/"Qwen3ForCausalLM"/' -e 's/"tie_word_embeddings": true/"tie_word_embeddings": false/' \
  "$scratch/config.json" > "$scratch/config-rerank.json"
"$qembed" make-random --config "$scratch/config-rerank.json" --task rerank --untied --out "$scratch/r" \
  --seed 5 --quiet
"$qembed" make-random --preset tiny --task rerank --out "$scratch/rt" --seed 6 --quiet
printf '%s\n' '{"text": "a fox is an animal"}' '{"text": "tea"}' \
  '{"text": "The quick brown fox jumps over the lazy dog, again and again."}' > "$scratch/docs.jsonl"
for run in r:f32:1e-3 r:q8_0:0.045 r:q4_k_m:0.045 rt:f32:1e-3; do
  IFS=: read -r dir type tol <<<"$run"
  "$qembed" quantize --model "$scratch/$dir" --type "$type" --out "$scratch/$dir-$type.gguf" --quiet
  "$qembed" rerank --model "$scratch/$dir-$type.gguf" --query "what is a fox" --print-ids \
    --threads 2 --input "$scratch/docs.jsonl" --output "$scratch/ours-$dir-$type.jsonl"
  node "$here/rank_crosscheck.mjs" --node-modules "$modules" --gguf "$scratch/$dir-$type.gguf" \
    --qembed "$scratch/ours-$dir-$type.jsonl" --max-diff "$tol" || rc=1
done
exit $rc
