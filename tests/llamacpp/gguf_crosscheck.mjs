// gguf_crosscheck.mjs — loads a GGUF file written by `qembed quantize` in llama.cpp (through
// node-llama-cpp), embeds the id sequences of an {"ids": [...]} JSONL and compares each vector
// with qembed's (a `qembed embed` output JSONL on the same file): prints every cosine, exits 1
// when one is below --min-cosine.
//   node gguf_crosscheck.mjs --node-modules DIR --gguf FILE --ids IDS.jsonl --qembed OUT.jsonl
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const need of ["node-modules", "gguf", "ids", "qembed"])
  if (!args[need]) throw new Error(`missing --${need}`);
const minCos = Number(args["min-cosine"] ?? 0.999);
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(path.join(path.resolve(args["node-modules"]), "node-llama-cpp/dist/index.js")).href
);
const lines = (f) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const docs = lines(args.ids).map((o) => o.ids);
const ours = lines(args.qembed).map((o) => o.embedding);
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
const maxLen = Math.max(...docs.map((d) => d.length));
const ctx = await model.createEmbeddingContext({ contextSize: maxLen + 8, batchSize: maxLen + 8, threads: 2 });
let worst = 2;
for (let i = 0; i < docs.length; i++) {
  const v = (await ctx.getEmbeddingFor(docs[i])).vector;
  let ab = 0, aa = 0, bb = 0;
  for (let k = 0; k < v.length; k++) {
    ab += v[k] * ours[i][k];
    aa += v[k] * v[k];
    bb += ours[i][k] * ours[i][k];
  }
  const cos = ab / Math.sqrt(aa * bb);
  worst = Math.min(worst, cos);
  console.log(`${path.basename(args.gguf)} document ${i} (${docs[i].length} ids): cosine ${cos.toFixed(6)} to llama.cpp`);
}
await ctx.dispose();
await model.dispose();
console.log(`worst cosine ${worst.toFixed(6)} (min ${minCos})`);
process.exit(worst >= minCos ? 0 : 1);
