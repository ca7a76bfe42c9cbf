// rank_crosscheck.mjs — loads a reranker GGUF written by `qembed quantize` in llama.cpp (through
// node-llama-cpp's ranking context), scores the very prompts qembed scored (the ids of a
// `qembed rerank --print-ids` output, passed as one whole prompt through a "{{query}}{{document}}"
// template with an empty query, so nothing is added or re-tokenized) and compares each score with
// qembed's as logits (log(s / (1 - s)): a random reranker's scores can sit where the sigmoid is
// flat, which would hide a difference): prints each, exits 1 when one differs by more than
// --max-diff x max(1, |logit|).
//   node rank_crosscheck.mjs --node-modules DIR --gguf FILE --qembed OUT.jsonl [--max-diff D]
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const need of ["node-modules", "gguf", "qembed"]) if (!args[need]) throw new Error(`missing --${need}`);
const maxDiff = Number(args["max-diff"] ?? 1e-4);
const { getLlama, LlamaLogLevel } = await import(
  pathToFileURL(path.join(path.resolve(args["node-modules"]), "node-llama-cpp/dist/index.js")).href
);
const ours = fs.readFileSync(args.qembed, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
const maxLen = Math.max(...ours.map((o) => o.ids.length));
const ctx = await model.createRankingContext({
  contextSize: maxLen + 8, batchSize: maxLen + 8, threads: 2, template: "{{query}}{{document}}",
});
const logit = (s) => Math.log(s / (1 - s));
let worst = 0;
for (const o of ours) {
  const got = await ctx.rank([], o.ids);
  const a = logit(got), b = logit(o.score);
  const d = Math.abs(a - b) / Math.max(1, Math.abs(b));
  worst = Math.max(worst, d);
  console.log(`${path.basename(args.gguf)} document ${o.index} (${o.ids.length} ids): score llama.cpp ${got.toFixed(6)} qembed ${o.score.toFixed(6)}; logit ${a.toFixed(5)} vs ${b.toFixed(5)}, relative diff ${d.toExponential(2)}`);
}
await ctx.dispose();
await model.dispose();
console.log(`worst relative logit diff ${worst.toExponential(2)} (max ${maxDiff})`);
process.exit(worst <= maxDiff ? 0 : 1);
