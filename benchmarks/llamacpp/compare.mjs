// compare.mjs — qembed's CPU backend and llama.cpp (node-llama-cpp) side by side in one run: the
// same weights (a GGUF made by safetensors_to_gguf.py from the same folder), the same id lists,
// the same thread count. Rounds alternate the engines so both see the same machine load; each
// pass is timed after its model is loaded and warmed up. Prints every pass, the median tokens/s
// of each engine and the worst cosine between their vectors.
//
//   node compare.mjs --gguf M.gguf --model DIR --ids IDS.jsonl --bench build/benchmarks/bench_embed_ids
//                    [--node-modules DIR] [--threads 2] [--rounds 3] [--batch 2048] [--flash-attention 1]
//
// node-llama-cpp is loaded from --node-modules (default ./node_modules): it is installed in a
// scratch folder, never in the repository.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const need of ["gguf", "model", "ids", "bench"])
  if (!args[need]) throw new Error(`missing --${need} (see the header of compare.mjs)`);
const threads = Number(args.threads ?? 2), rounds = Number(args.rounds ?? 3);
const batch = Number(args.batch ?? 2048);
const flash = args["flash-attention"] === "1"; // llama.cpp's faster setting here (46.8 vs 41.4 tokens/s)
const modules = path.resolve(args["node-modules"] ?? "node_modules");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(modules, "node-llama-cpp/dist/index.js")).href);

const docs = fs.readFileSync(args.ids, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l).ids);
const tokens = docs.reduce((s, d) => s + d.length, 0);
const load = () => {
  const psi = fs.existsSync("/proc/pressure/cpu") ? fs.readFileSync("/proc/pressure/cpu", "utf8").split(" ")[1] : "";
  return `load ${os.loadavg()[0].toFixed(2)} ${psi.replace("avg10=", "cpu-pressure10s=")}%`;
};
const unit = (v) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};
const cosine = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0, defaultContextFlashAttention: flash });
const maxLen = Math.max(...docs.map((d) => d.length));
const ctx = await model.createEmbeddingContext({ contextSize: Math.max(batch, maxLen + 1), batchSize: batch, threads });
await ctx.getEmbeddingFor(docs[0]); // warm-up, as bench_embed_ids does

async function llamaPass() {
  const t0 = performance.now();
  const vecs = [];
  for (const d of docs) vecs.push(unit((await ctx.getEmbeddingFor(d)).vector));
  return { tps: tokens / ((performance.now() - t0) / 1000), vecs };
}

function qembedPass(packed) {
  const out = `${os.tmpdir()}/qembed-compare-${process.pid}.jsonl`;
  const argv = ["--model", args.model, "--input", args.ids, "--output", out, "--threads", String(threads)];
  const summary = JSON.parse(execFileSync(args.bench, packed ? [...argv, "--packed"] : argv, { encoding: "utf8" }));
  const vecs = fs.readFileSync(out, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l).embedding);
  fs.unlinkSync(out);
  return { tps: summary.tokens_per_s, vecs };
}

console.log(`${docs.length} documents, ${tokens} ids, ${threads} threads, llama.cpp batch ${batch} flash-attention ${flash}, ` +
  `${os.cpus().length} cpus (${os.cpus()[0].model})`);
console.log(`llama.cpp: ${llama.systemInfo}`);
const runs = { "llama.cpp": [], "qembed per-doc": [], "qembed packed": [] };
let worst = 1, ref = null;
for (let r = 1; r <= rounds; r++) {
  for (const [name, pass] of [["llama.cpp", llamaPass], ["qembed per-doc", () => qembedPass(false)],
    ["qembed packed", () => qembedPass(true)]]) {
    const before = load();
    const { tps, vecs } = await pass();
    runs[name].push(tps);
    if (name === "llama.cpp") ref = vecs;
    else vecs.forEach((v, i) => (worst = Math.min(worst, cosine(v, ref[i]))));
    console.log(`round ${r}  ${name.padEnd(15)} ${tps.toFixed(1).padStart(7)} tokens/s   (before: ${before})`);
  }
}
for (const [name, xs] of Object.entries(runs))
  console.log(`median ${name.padEnd(15)} ${median(xs).toFixed(1).padStart(7)} tokens/s   of ${xs.map((x) => x.toFixed(1)).join(", ")}`);
console.log(`worst cosine qembed vs llama.cpp over ${docs.length} documents: ${worst.toFixed(9)} (1 - ${(1 - worst).toExponential(2)})`);
await ctx.dispose();
await model.dispose();
