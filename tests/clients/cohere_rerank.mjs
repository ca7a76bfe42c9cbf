// cohere_rerank.mjs — the real Cohere SDK (cohere-ai, pinned in run_clients.sh) against a qembed
// reranker server: CohereClient.rerank (POST /v1/rerank, what @langchain/cohere uses) and
// CohereClientV2.rerank (POST /v2/rerank, what langchain_cohere and LlamaIndex use). Exits
// nonzero with a message on the first thing the SDK cannot read or that is wrong.
import assert from "node:assert/strict";
import { CohereClient, CohereClientV2 } from "cohere-ai";

const [base, model] = process.argv.slice(2);
const documents = ["the fox jumps over the lazy dog", "vectors for search", "the weather forecast"];

function checkRanked(results, n, what) {
  assert.equal(results.length, n, `${what}: ${results.length} results`);
  const seen = new Set();
  let prev = Infinity;
  for (const r of results) {
    assert.ok(Number.isInteger(r.index) && r.index >= 0 && r.index < documents.length, `${what}: index`);
    assert.ok(!seen.has(r.index), `${what}: index ${r.index} twice`);
    seen.add(r.index);
    assert.ok(r.relevanceScore > 0 && r.relevanceScore < 1, `${what}: relevanceScore ${r.relevanceScore}`);
    assert.ok(r.relevanceScore <= prev, `${what}: not sorted`);
    prev = r.relevanceScore;
  }
}

const v1 = new CohereClient({ token: "unused", environment: base });
const r1 = await v1.rerank({ model, query: "what does the fox do", documents: [documents[0], { text: documents[1] }, documents[2]], topN: 2, returnDocuments: true });
checkRanked(r1.results, 2, "v1");
for (const r of r1.results) assert.equal(r.document.text, documents[r.index], "v1: document echoed");

const v2 = new CohereClientV2({ token: "unused", environment: base });
const r2 = await v2.rerank({ model, query: "what does the fox do", documents, topN: 3 });
checkRanked(r2.results, 3, "v2");
// the same model and query give the same scores on both routes
for (const r of r1.results) {
  const same = r2.results.find((x) => x.index === r.index);
  assert.ok(Math.abs(same.relevanceScore - r.relevanceScore) < 1e-6, "v1 and v2 agree");
}
await assert.rejects(v2.rerank({ model: "not-served", query: "q", documents }), /400|not served/);
console.log("cohere-ai: v1 and v2 rerank ok");
