#!/usr/bin/env python3
"""A Qwen3 safetensors folder -> one GGUF v3 file that llama.cpp loads as architecture `qwen3`.

A benchmark helper, not a product converter: it writes exactly what llama.cpp needs to embed
with a Qwen3-Embedding model (the weights, the qwen3.* geometry, last-token pooling and the
byte-level BPE vocabulary), so both engines can run the same random weights side by side.
Written from the GGUF spec (ggml docs/gguf.md); standard library only.

  safetensors_to_gguf.py MODEL_DIR OUT.gguf [--type f16|f32] [--tokenizer tokenizer.json]

MODEL_DIR holds config.json and model.safetensors (bf16, f16 or f32). Matrices are written as
--type (f16 default); the 1-D norm weights always as f32, as llama.cpp's own converter does.
f16 -> f16 and f32 -> f32 copy bytes; bf16 -> f32 is exact; bf16/f32 -> f16 round to nearest.
"""
import argparse
import json
import mmap
import os
import struct
import sys

GGML_F32, GGML_F16 = 0, 1
# GGUF metadata value types
U32, I32, F32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
ALIGNMENT = 32  # the spec's default; general.alignment is not written
POOLING_LAST = 3
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5

# Hugging Face name (after "model." is dropped) -> GGUF name; {} is the layer number.
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name):
    """The GGUF tensor name, or None for a tensor llama.cpp does not need (lm_head)."""
    name = hf_name[len("model."):] if hf_name.startswith("model.") else hf_name
    if name == "embed_tokens.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    parts = name.split(".")
    if parts[0] == "layers" and parts[-1] == "weight":
        inner = ".".join(parts[2:-1])
        if inner in LAYER_NAMES:
            return "blk.%s.%s.weight" % (parts[1], LAYER_NAMES[inner])
    if name == "lm_head.weight" or hf_name == "lm_head.weight":
        return None
    sys.exit("safetensors_to_gguf: no GGUF name for tensor %s" % hf_name)


class Writer:
    """Little-endian GGUF primitives appended to a bytearray."""

    def __init__(self):
        self.buf = bytearray()

    def u32(self, v):
        self.buf += struct.pack("<I", v)

    def u64(self, v):
        self.buf += struct.pack("<Q", v)

    def string(self, s):
        b = s.encode("utf-8")
        self.u64(len(b))
        self.buf += b

    def kv(self, key, vtype, value):
        self.string(key)
        self.u32(vtype)
        self.value(vtype, value)

    def value(self, vtype, v):
        if vtype == U32:
            self.u32(v)
        elif vtype == I32:
            self.buf += struct.pack("<i", v)
        elif vtype == F32:
            self.buf += struct.pack("<f", v)
        elif vtype == BOOL:
            self.buf += b"\x01" if v else b"\x00"
        elif vtype == STRING:
            self.string(v)
        else:
            raise ValueError(vtype)

    def array(self, key, elem_type, values):
        self.string(key)
        self.u32(ARRAY)
        self.u32(elem_type)
        self.u64(len(values))
        if elem_type == I32:
            self.buf += struct.pack("<%di" % len(values), *values)
        else:
            for v in values:
                self.value(elem_type, v)


def read_safetensors(path):
    """(mapped file, data start, {name: header entry}) of one .safetensors file."""
    f = open(path, "rb")
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack_from("<Q", mm, 0)
    header = json.loads(mm[8:8 + n])
    header.pop("__metadata__", None)
    return mm, 8 + n, header


CHUNK = 1 << 20  # elements converted per step, so a large tensor never becomes one Python tuple


def tensor_bytes(raw, src, dst):
    """The bytes of one tensor converted from safetensors dtype src to ggml type dst."""
    if (src, dst) in (("F16", GGML_F16), ("F32", GGML_F32)):
        return raw
    if src == "BF16" and dst == GGML_F32:  # bf16 is the top half of an f32: exact
        out = bytearray(len(raw) * 2)
        out[2::4], out[3::4] = raw[0::2], raw[1::2]
        return bytes(out)
    if src in ("BF16", "F16") and dst == GGML_F32 or src in ("BF16", "F32") and dst == GGML_F16:
        if src == "BF16":
            raw = tensor_bytes(raw, "BF16", GGML_F32)
            src = "F32"
        size = 4 if src == "F32" else 2
        fin, fout = ("f", "e") if src == "F32" else ("e", "f")
        out = bytearray()
        for start in range(0, len(raw), CHUNK * size):
            piece = raw[start:start + CHUNK * size]
            vals = struct.unpack("<%d%s" % (len(piece) // size, fin), piece)
            out += struct.pack("<%d%s" % (len(vals), fout), *vals)  # OverflowError past f16
        return bytes(out)
    sys.exit("safetensors_to_gguf: cannot convert %s to ggml type %d" % (src, dst))


def vocabulary(tokenizer_path, vocab_size):
    """tokens, token types and merges for tokenizer.ggml.*, indexed by id up to vocab_size."""
    tok = json.load(open(tokenizer_path, encoding="utf-8"))
    tokens = [None] * vocab_size
    types = [TOKEN_UNUSED] * vocab_size
    for text, i in tok["model"]["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, TOKEN_NORMAL
    for added in tok.get("added_tokens", []):
        i = added["id"]
        if i < vocab_size:
            tokens[i] = added["content"]
            types[i] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    for i, t in enumerate(tokens):  # ids the tokenizer never produces still need a name
        if t is None:
            tokens[i] = "[PAD%d]" % i
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    return tokens, types, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--type", choices=("f16", "f32"), default="f16")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: MODEL_DIR/tokenizer.json)")
    args = ap.parse_args()

    cfg = json.load(open(os.path.join(args.model_dir, "config.json")))
    mm, data_start, header = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    matrix_type = GGML_F16 if args.type == "f16" else GGML_F32
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    eos = cfg.get("eos_token_id", 151643)
    tokens, types, merges = vocabulary(
        args.tokenizer or os.path.join(args.model_dir, "tokenizer.json"), cfg["vocab_size"])

    tensors = []  # (gguf name, ggml type, dims innermost first, hf name)
    for hf_name in sorted(header):
        name = gguf_name(hf_name)
        if name is None:
            continue
        shape = header[hf_name]["shape"]
        ttype = matrix_type if len(shape) == 2 else GGML_F32
        tensors.append((name, ttype, list(reversed(shape)), hf_name))

    w = Writer()
    w.buf += b"GGUF"
    w.u32(3)
    w.u64(len(tensors))
    kvs = [
        ("general.architecture", STRING, "qwen3"),
        ("general.name", STRING, os.path.basename(os.path.normpath(args.model_dir))),
        ("general.file_type", U32, 1 if matrix_type == GGML_F16 else 0),  # MOSTLY_F16 / ALL_F32
        ("qwen3.block_count", U32, cfg["num_hidden_layers"]),
        ("qwen3.context_length", U32, cfg["max_position_embeddings"]),
        ("qwen3.embedding_length", U32, cfg["hidden_size"]),
        ("qwen3.feed_forward_length", U32, cfg["intermediate_size"]),
        ("qwen3.attention.head_count", U32, cfg["num_attention_heads"]),
        ("qwen3.attention.head_count_kv", U32, cfg["num_key_value_heads"]),
        ("qwen3.attention.key_length", U32, head_dim),
        ("qwen3.attention.value_length", U32, head_dim),
        ("qwen3.rope.freq_base", F32, float(cfg["rope_theta"])),
        ("qwen3.attention.layer_norm_rms_epsilon", F32, float(cfg["rms_norm_eps"])),
        ("qwen3.pooling_type", U32, POOLING_LAST),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "qwen2"),
        ("tokenizer.ggml.bos_token_id", U32, eos),
        ("tokenizer.ggml.eos_token_id", U32, eos),
        ("tokenizer.ggml.padding_token_id", U32, eos),
        # The benchmark passes ids that already end with <|endoftext|>: add nothing.
        ("tokenizer.ggml.add_bos_token", BOOL, False),
        ("tokenizer.ggml.add_eos_token", BOOL, False),
    ]
    w.u64(len(kvs) + 3)
    for key, vtype, value in kvs:
        w.kv(key, vtype, value)
    w.array("tokenizer.ggml.tokens", STRING, tokens)
    w.array("tokenizer.ggml.token_type", I32, types)
    w.array("tokenizer.ggml.merges", STRING, merges)

    offset, sizes = 0, []
    for name, ttype, dims, _ in tensors:
        count = 1
        for d in dims:
            count *= d
        size = count * (2 if ttype == GGML_F16 else 4)
        w.string(name)
        w.u32(len(dims))
        for d in dims:
            w.u64(d)
        w.u32(ttype)
        w.u64(offset)
        sizes.append(size)
        offset += (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    w.buf += b"\x00" * (-len(w.buf) % ALIGNMENT)

    with open(args.out, "wb") as out:
        out.write(w.buf)
        for (name, ttype, dims, hf_name), size in zip(tensors, sizes):
            entry = header[hf_name]
            begin, end = entry["data_offsets"]
            data = tensor_bytes(mm[data_start + begin:data_start + end], entry["dtype"], ttype)
            if len(data) != size:
                sys.exit("safetensors_to_gguf: %s has %d bytes, expected %d"
                         % (hf_name, len(data), size))
            out.write(data)
            out.write(b"\x00" * (-size % ALIGNMENT))
    print("wrote %s: %d tensors, %d tokens, %d merges, matrices %s"
          % (args.out, len(tensors), len(tokens), len(merges), args.type))


if __name__ == "__main__":
    main()
