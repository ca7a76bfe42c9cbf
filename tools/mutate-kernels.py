#!/usr/bin/env python3
"""mutate-kernels.py — plants typical CUDA kernel bugs, one at a time, and shows that the kernel
suite on the CPU kernel emulator (test_kernels_emu) fails for each: the evidence that the suite
can see a broken kernel. Equivalent mutants (code that changes nothing observable) are marked as
such, with the reason.

  tools/mutate-kernels.py            build a scratch copy of the tree, run every mutant (~15 min
                                     on 2 cores), print a Markdown table for docs/kernels.md
  tools/mutate-kernels.py --only N   the mutants whose name contains N
  tools/mutate-kernels.py --check    every mutant still applies to the sources (no build; the
                                     ctest `mutants_apply` runs this so the list cannot rot)
  tools/mutate-kernels.py --list     the mutants

The scratch copy lives in a temporary folder (or --work DIR), so the working tree is never
modified. A mutant "is caught" when the suite exits non-zero (a failed comparison, an emulator
report such as a race or a hang, a crash or a timeout).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def M(name, kind, edits, equivalent):
    """A mutant: its name, the kind of bug, the edits (file, original text that must occur exactly
    once, replacement) and, for an equivalent mutant, why it changes nothing observable."""
    return {"name": name, "kind": kind, "edits": edits, "equivalent": equivalent}


MUTANTS = [
    M('S fragment order', 'fragment order',
      [('kernels/attention.cu',
        'mma_bf16(sc[2 * np], qf[kk], b[0], b[1]);',
        'mma_bf16(sc[2 * np], qf[kk], b[1], b[0]);')],
      None),
    M('P fragment order', 'fragment order',
      [('kernels/attention.cu',
        'pa[1] = pack_bf16x2(sc[2 * kk][2], sc[2 * kk][3]);',
        'pa[1] = pack_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);')],
      None),
    M('V not transposed', 'fragment order',
      [('kernels/attention.cu',
        'ldmatrix_x4_trans(b, sV + swz(r, c));',
        'ldmatrix_x4(b, sV + swz(r, c));')],
      None),
    M('K read unswizzled', 'swizzle',
      [('kernels/attention.cu',
        'ldmatrix_x4(b, sK + swz(r, c));',
        'ldmatrix_x4(b, sK + r * ATT_D + c);')],
      None),
    M('weaker swizzle (row & 3)', 'swizzle (bank conflicts only)',
      [('kernels/attention_common.cuh',
        '((((col >> 3) ^ (row & 7))) << 3)',
        '((((col >> 3) ^ (row & 3))) << 3)')],
      None),
    M('missing cp.async wait', 'missing wait',
      [('kernels/attention.cu',
        '        cp_async_wait_all();\n        __syncthreads(); /* K(jt) landed;',
        '        __syncthreads(); /* K(jt) landed;')],
      None),
    M('missing barrier before P V', 'missing barrier',
      [('kernels/attention.cu',
        '        __syncthreads(); /* V(jt) landed; every warp is done reading K(jt) */\n',
        '')],
      None),
    M('missing barrier before V load', 'missing barrier',
      [('kernels/attention.cu',
        '        __syncthreads(); /* K(jt) landed; every warp is done with V(jt-1) */\n',
        '')],
      None),
    M('barrier after Q fragments removed', 'missing barrier',
      [('kernels/attention.cu',
        '    __syncthreads(); /* every warp has its Q before sV is overwritten by V */\n',
        '')],
      "redundant: the first loop iteration's wait + __syncthreads also precedes the first write of V into sV"),
    M('causal off by one', 'causal mask',
      [('kernels/attention.cu',
        'if (need_mask && (j >= Lk || j > i_abs)) v = -INFINITY;',
        'if (need_mask && (j >= Lk || j >= i_abs)) v = -INFINITY;')],
      None),
    M('Lq < Lk alignment lost', 'Lq < Lk alignment',
      [('kernels/attention.cu',
        'const int off = Lk - Lq; /* query i sits at absolute position i + off */',
        'const int off = 0;')],
      None),
    M('GQA mapping', 'GQA mapping',
      [('kernels/attention.cu',
        'const int g = h / (p.heads / p.kv_heads);',
        'const int g = h % p.kv_heads;')],
      None),
    M('ALiBi sign', 'ALiBi sign',
      [('kernels/attention.cu',
        'v += slope_log2 * (float)(j - i_abs);',
        'v += slope_log2 * (float)(i_abs - j);')],
      None),
    M('paged row', 'paged row',
      [('kernels/attention_common.cuh',
        'return (long long)page * p.page_size + j % p.page_size;',
        'return (long long)page * p.page_size + j / p.page_size;')],
      None),
    M('no zero-fill past Lk', 'zero-fill',
      [('kernels/attention.cu',
        'cp_async16(tile + swz(r, c * 8), src, bytes);',
        'if (bytes) cp_async16(tile + swz(r, c * 8), src, bytes);')],
      'the Q tile staged through sV first writes all 64 rows (zero-filled past Lq) and later V tiles hold real values, so the rows past Lk multiply P = 0 by finite numbers: the zero-fill is defensive (the mutant below removes both)'),
    M('no zero-fill at all (Q and K/V)', 'zero-fill',
      [('kernels/attention.cu',
        'cp_async16(tile + swz(r, c * 8), src, bytes);',
        'if (bytes) cp_async16(tile + swz(r, c * 8), src, bytes);'),
       ('kernels/attention.cu',
        'cp_async16(sV + swz(r, c * 8), src, bytes);',
        'if (bytes) cp_async16(sV + swz(r, c * 8), src, bytes);')],
      None),
    M('output stride', 'wrong stride',
      [('kernels/attention.cu',
        '(bf16 *)p.out + (long long)(q_start + i) * p.out_stride',
        '(bf16 *)p.out + (long long)(q_start + i) * p.q_stride')],
      None),
    M('mask clause for Lk removed', 'causal mask',
      [('kernels/attention.cu',
        'const bool need_mask = (n0 + ATT_BN > m0 + off) || (n0 + ATT_BN > Lk);',
        'const bool need_mask = (n0 + ATT_BN > m0 + off);')],
      'redundant: Lk <= m0 + off + ATT_BM (the last query row sits at Lk - 1), so a tile reaching past Lk also reaches past m0 + off'),
    M('softmax rescale dropped', 'online softmax',
      [('kernels/attention.cu',
        '            o[dt][0] *= alpha[0];\n',
        '')],
      None),
    M('block_sum reuse barrier', 'missing barrier',
      [('kernels/common.cuh',
        '    __syncthreads(); /* shared33 may still be read by a previous call */\n',
        '')],
      "redundant for every caller today: the previous call's last barrier already orders its reads of shared33[0..n) before these writes, and shared33[32] is written again only after this call's second barrier"),
    M('RMSNorm mean over dim - 1', 'rounding/normaliser',
      [('kernels/rmsnorm.cu',
        'const float inv = rsqrtf(ss / (float)dim + eps);',
        'const float inv = rsqrtf(ss / (float)(dim - 1) + eps);')],
      None),
    M('RoPE angle in fp32', 'rounding',
      [('kernels/qk_norm_rope.cuh',
        'double ang = pos * inv_freq;',
        'double ang = (double)((float)pos * (float)inv_freq);')],
      None),
    M('NeoX pair partner', 'wrong stride',
      [('kernels/qk_norm_rope.cu',
        'hi[p] = i < half ? bf16_to_f32(x[i + half]) : 0.0f;',
        'hi[p] = i < half ? bf16_to_f32(x[i + 1]) : 0.0f;')],
      None),
    M('SwiGLU up half', 'wrong stride',
      [('kernels/swiglu.cu',
        'const uint4 u = *(const uint4 *)(gu + r * 2 * inter + inter + c);',
        'const uint4 u = *(const uint4 *)(gu + r * 2 * inter + c);')],
      None),
    M('pooled L2 over hidden', 'Matryoshka cut',
      [('kernels/pool.cu',
        '    for (int i = threadIdx.x; i < dims; i += blockDim.x) {\n        const float v',
        '    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {\n        const float v')],
      None),
    M('GEMM operands swapped', 'cuBLASLt mapping',
      [('kernels/gemm.cu',
        'CUBLAS_CHECK(cublasLtMatmul(g->lt, plan->desc, &alpha, w, plan->a, x, plan->b,',
        'CUBLAS_CHECK(cublasLtMatmul(g->lt, plan->desc, &alpha, x, plan->a, w, plan->b,')],
      None),
    M('qgemm B fragment order', 'fragment order',
      [('kernels/qgemm.cu',
        'mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);',
        'mma_bf16(acc[mt][2 * np], a[mt], b[1], b[0]);')],
      None),
    M('qgemm missing cp.async wait', 'missing wait',
      [('kernels/qgemm.cu',
        '        cp_async_wait_all();\n        __syncthreads(); /* x(s) landed;',
        '        __syncthreads(); /* x(s) landed;')],
      None),
    M('qgemm prefetched weights never used', 'pipeline',
      [('kernels/qgemm.cu',
        'cur[mt][0] = nxt[mt][0], cur[mt][1] = nxt[mt][1];',
        '(void)nxt;')],
      None),
    M('qgemm Q4_K high scale bits dropped', 'scale decode',
      [('kernels/qpack.cuh',
        'sc = (b & 0xf) | (((m.y >> (8 * (j - 4))) >> 6 & 3) << 4);',
        'sc = (b & 0xf);')],
      None),
    M('qgemm Q8_0 block scale index', 'scale decode',
      [('kernels/qpack.cuh',
        'const uint32_t dd = (j >> 1) < 2 ? d.x : d.y;',
        'const uint32_t dd = j < 2 ? d.x : d.y;')],
      None),
    M('skinny fused SwiGLU halves swapped', 'wrong stride',
      [('kernels/gemm_skinny.cu',
        'f32_to_bf16(silu_mul(reduced_bf16(p, t, j), reduced_bf16(p, t, inter + j)));',
        'f32_to_bf16(silu_mul(reduced_bf16(p, t, inter + j), reduced_bf16(p, t, j)));')],
      None),
    M('skinny fused epilogue skips the bf16 rounding', 'rounding',
      [('kernels/gemm_skinny.cu',
        '    return bf16_to_f32(f32_to_bf16(v));',
        '    return v;')],
      None),
    M('PDL wait dropped', 'synchronisation',
      [('kernels/swiglu.cu',
        'swiglu_vec8_kernel(const bf16 *__restrict__ gu, int rows, int inter,\n'
        '                                          bf16 *__restrict__ out) {\n    griddep_wait();',
        'swiglu_vec8_kernel(const bf16 *__restrict__ gu, int rows, int inter,\n'
        '                                          bf16 *__restrict__ out) {\n')],
      None),
    M('qgemm Q6_K offset', 'quant offset',
      [('kernels/qpack.cuh',
        '(((h >> (2 * i)) & 3) << 4)) - 32);',
        '(((h >> (2 * i)) & 3) << 4)) - 31);')],
      None),
    M('qgemm split-K reduce drops a split', 'reduction',
      [('kernels/qgemm.cu',
        'for (int z = 0; z < splits; z++)',
        'for (int z = 0; z + 1 < splits; z++)')],
      None),
    M('fused SwiGLU gate/up halves', 'wrong stride',
      [('kernels/gemm_fused.cu',
        'const float g0 = d[i], g1 = d[i + 1], u0 = d[i + 32], u1 = d[i + 33];',
        'const float g0 = d[i + 32], g1 = d[i + 33], u0 = d[i], u1 = d[i + 1];')],
      None),
    M('fused RoPE rotation sign', 'RoPE',
      [('kernels/gemm_fused.cu',
        'o[e] = a * cs - b * sn;',
        'o[e] = a * cs + b * sn;')],
      None),
    M('fused RMSNorm over half a quad', 'reduction',
      [('kernels/gemm_fused.cu',
        '        ss += __shfl_xor_sync(0xffffffffu, ss, 2);\n',
        '')],
      None),
    M('fused stage released before its wgmmas are done', 'pipeline',
      [('kernels/gemm_fused.cu',
        'if (kt > 0) mbar_arrive(&empty[(kt - 1) % FG_STAGES]);',
        'if (kt + 1 < k_tiles) mbar_arrive(&empty[kt % FG_STAGES]);')],
      None),
    M('fused B descriptor k16 step', 'descriptor',
      [('kernels/gemm_fused.cu',
        'wgmma_desc(sb + 32 * kk, 16, 1024, WGMMA_SWIZZLE_128B),',
        'wgmma_desc(sb + 16 * kk, 16, 1024, WGMMA_SWIZZLE_128B),')],
      None),
    M('quantized gather Q4_K min sign', 'dequantization',
      [('kernels/qembed_gather.cu',
        '(float)nib - half_to_f32(m + 2) * (float)mn;',
        '(float)nib + half_to_f32(m + 2) * (float)mn;')],
      None),
    M('fa3 k_full parity', 'mbarrier phase',
      [('kernels/attention_fa3.cu',
        """            mbar_wait(&b->k_full[kst], (kt / FA3_STAGES) & 1);
            mbar_wait(&b->v_full[vst], (vt / FA3_STAGES) & 1);""",
        """            mbar_wait(&b->k_full[kst], ((kt / FA3_STAGES) & 1) ^ 1);
            mbar_wait(&b->v_full[vst], (vt / FA3_STAGES) & 1);""")],
      None),
    M('fa3 causal mask dropped', 'causal mask',
      [('kernels/attention_fa3.cu',
        'if (need_mask && (j >= w.Lk || j > i_abs)) v = -INFINITY;',
        'if (need_mask && (j >= w.Lk)) v = -INFINITY;')],
      None),
    M('fa3 V rows past the sequence loaded', 'zero-fill',
      [('kernels/attention_fa3.cu',
        'page_min_i, row0, valid, w.g * ATT_D, &b->v_full[st]);',
        'page_min_i, row0, FA3_BN, w.g * ATT_D, &b->v_full[st]);')],
      None),
    M('fa3 ping-pong hand-over missing', 'named barrier',
      [('kernels/attention_fa3.cu',
        """            named_bar_arrive(their_turn, 256);
            wgmma_wait_group<1>();""",
        """            wgmma_wait_group<1>();""")],
      None),
    M('fa3 V read K-major', 'descriptor',
      [('kernels/attention_fa3.cu',
        'wgmma_bf16_rs<128, 1>(',
        'wgmma_bf16_rs<128, 0>(')],
      None),
    M('fa3 GQA mapping', 'GQA mapping',
      [('kernels/attention_fa3.cu',
        'w.g = it.h / (p.heads / p.kv_heads);',
        'w.g = it.h % p.kv_heads;')],
      None),
]



def check(sources):
    bad = 0
    for m in MUTANTS:
        for path, old, _ in m["edits"]:
            with open(os.path.join(sources, path)) as f:
                n = f.read().count(old)
            if n != 1:
                print(f"mutant '{m['name']}': its original text occurs {n} times in {path}")
                bad += 1
    return bad


def copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))
    shared = os.path.join(os.path.dirname(ROOT), "shared")  # fixtures beside the project
    if os.path.isdir(shared) and not os.path.exists(os.path.join(os.path.dirname(dst), "shared")):
        os.symlink(shared, os.path.join(os.path.dirname(dst), "shared"))


def run(cmd, cwd, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else ""
        return 124, out + "\n(timed out)", time.time() - t0


def first_failure(log):
    """The first reason the suite gives: an emulator report, else the first failed check."""
    lines = log.splitlines()
    for line in lines:
        if "qe_emu:" in line and ("race" in line or "never" in line or "deadlock" in line):
            return "emulator: " + line.split(": ", 2)[-1][:110]
    for i, line in enumerate(lines):
        if "Assertion Failed" in line or "[ERR ]" in line:
            for text in [line] + lines[i + 1:i + 4]:
                text = text.replace("[----]", "").replace("[ERR ]", "").strip()
                if text and "Assertion Failed" not in text:
                    return text[:150]
    for line in lines:
        if "[FAIL]" in line or "CRASH" in line or "timed out" in line:
            return line.strip()[:150]
    return "(see the log)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--work", default="")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per suite run")
    a = ap.parse_args()
    if a.list:
        for m in MUTANTS:
            print(f"{m['name']:36} {m['kind']:28} {m['edits'][0][0]}")
        return 0
    if a.check:
        bad = check(ROOT)
        print(f"{len(MUTANTS)} mutants, {len(MUTANTS) - bad} apply")
        return 1 if bad else 0
    if check(ROOT):
        return 1
    work = a.work or tempfile.mkdtemp(prefix="qe-mutants-")
    src = os.path.join(work, "main")
    build = os.path.join(work, "build")
    print(f"scratch tree {src}", flush=True)
    copy_tree(src)
    rc, log, _ = run(["cmake", "-S", src, "-B", build, "-G", "Ninja",
                      "-DCMAKE_BUILD_TYPE=Release"], src, 600)
    if rc:
        print(log)
        return 1
    suite = ["tests/test_kernels_emu", "--jobs", "2"]
    rc, log, secs = run(["ninja", "test_kernels_emu"], build, 1800)
    if rc == 0:
        rc, log, secs = run(suite, build, a.timeout)
    if rc:
        print("the unmutated suite does not pass:\n" + log[-3000:])
        return 1
    print(f"unmutated suite passes ({secs:.0f} s)", flush=True)
    rows, missed = [], 0
    for m in MUTANTS:
        name, kind, equivalent = m["name"], m["kind"], m["equivalent"]
        if a.only and a.only not in name:
            continue
        originals = {}
        for path, old, new in m["edits"]:
            target = os.path.join(src, path)
            if target not in originals:
                with open(target) as f:
                    originals[target] = f.read()
            with open(target) as f:
                text = f.read()
            with open(target, "w") as f:
                f.write(text.replace(old, new))
        rc, log, _ = run(["ninja", "test_kernels_emu"], build, 1800)
        built = rc == 0
        if built:
            rc, log, secs = run(suite, build, a.timeout)
        for target, text in originals.items():
            with open(target, "w") as f:
                f.write(text)
        caught = rc != 0
        how = ("does not compile" if not built else first_failure(log)) if caught else "passes"
        verdict = ("caught" if caught else "equivalent" if equivalent else "NOT CAUGHT")
        if not caught and not equivalent:
            missed += 1
        note = equivalent if (equivalent and not caught) else how
        rows.append((name, kind, m["edits"][0][0], verdict, note))
        print(f"{verdict:10} {name}: {note}", flush=True)
    run(["ninja", "test_kernels_emu"], build, 1800)  # leave the scratch build unmutated
    print("\n| mutant | kind | file | result | how it shows |\n|---|---|---|---|---|")
    for name, kind, path, verdict, note in rows:
        print(f"| {name} | {kind} | `{os.path.basename(path)}` | {verdict} | "
              f"{note.replace('|', '/')} |")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
