#!/usr/bin/env python3
"""mixed_steps.py: how long a short query waits while long documents are being embedded.

Starts `qembed serve` on a model, sends DOCS documents of DOC_LEN token ids at once (each its own
request), and while they run sends one short query at a time, timing each. The engine's step
times come from /metrics (qembed_inference_duration_seconds, polled between steps). Then the same query alone, for
reference. Prints one `result` line. Standard library only.

  python3 benchmarks/mixed_steps.py --qembed build/qembed --model DIR [--docs 4]
      [--doc-len N (default: the model's max positions)] [--batch-tokens 1024] [--queries 10]
"""
import argparse
import json
import re
import statistics
import subprocess
import threading
import time
import urllib.request


def post(base, body, timeout=3600):
    req = urllib.request.Request(base + "/v1/embeddings", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return r.status, time.monotonic() - t0


def metric(base, name):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qembed", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--doc-len", type=int, default=0)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--backend", default="cpu")
    a = ap.parse_args()
    with open(a.model + "/config.json") as f:
        cfg = json.load(f)
    doc_len = a.doc_len or cfg["max_position_embeddings"]
    vocab = cfg["vocab_size"]
    pool = a.docs * doc_len
    srv = subprocess.Popen([a.qembed, "serve", "--model", a.model, "--port", "0", "--backend",
                            a.backend, "--max-batch-tokens", str(a.batch_tokens),
                            "--kv-pool-tokens", str(pool), "--max-queue-tokens", str(1 << 40),
                            "--quiet"], stderr=subprocess.PIPE, text=True)
    base = None
    for line in srv.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            base = m.group(1)
        if "ready:" in line:
            break
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    try:
        query = {"input": "how long does a short query wait?"}
        post(base, query)  # warm-up
        alone = statistics.median(post(base, query)[1] for _ in range(5))
        steps0 = metric(base, "qembed_inference_duration_seconds_count")
        secs0 = metric(base, "qembed_inference_duration_seconds_sum")
        docs = [{"input": [[(7 + 31 * d + 7717 * t) % vocab for t in range(doc_len)]]}
                for d in range(a.docs)]
        done = []
        step_times = []  # each step's seconds, read off /metrics between steps

        def watch_steps():
            n, total = steps0, secs0
            while len(done) < a.docs:
                n2 = metric(base, "qembed_inference_duration_seconds_count")
                t2 = metric(base, "qembed_inference_duration_seconds_sum")
                if n2 > n:
                    step_times.append(((t2 - total) / (n2 - n), n2 - n))
                    n, total = n2, t2
                time.sleep(0.005)

        watcher = threading.Thread(target=watch_steps)
        t_start = time.monotonic()
        threads = [threading.Thread(target=lambda b=b: done.append(post(base, b)[1]))
                   for b in docs]
        for t in threads:
            t.start()
        watcher.start()
        while (metric(base, "qembed_kv_pool_used_tokens") or 0) == 0:
            time.sleep(0.01)
        lat = []
        while len(lat) < a.queries and len(done) < a.docs:
            lat.append(post(base, query)[1])
            time.sleep(0.05)
        for t in threads:
            t.join()
        watcher.join()
        # the longest single step seen (a poll that saw several steps gives their mean)
        longest = max(t for t, k in step_times)
        wall = time.monotonic() - t_start
        steps = metric(base, "qembed_inference_duration_seconds_count") - steps0
        step_s = (metric(base, "qembed_inference_duration_seconds_sum") - secs0) / steps
        print(f"documents  {a.docs} x {doc_len} tokens, all done in {wall:.1f} s "
              f"({a.docs * doc_len / wall:.0f} tokens/s), {steps:.0f} steps of "
              f"{a.batch_tokens} tokens, mean step {step_s * 1e3:.1f} ms, longest {longest * 1e3:.1f} ms")
        print(f"queries    {len(lat)} during the documents: median {statistics.median(lat) * 1e3:.1f}"
              f" ms, max {max(lat) * 1e3:.1f} ms; alone {alone * 1e3:.1f} ms")
        print(f"result docs={a.docs} doc_len={doc_len} budget={a.batch_tokens} "
              f"step_ms={step_s * 1e3:.1f} longest_step_ms={longest * 1e3:.1f} query_median_ms={statistics.median(lat) * 1e3:.1f} "
              f"query_max_ms={max(lat) * 1e3:.1f} query_alone_ms={alone * 1e3:.1f} "
              f"max_over_longest_step={max(lat) / longest:.2f} docs_wall_s={wall:.1f}")
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
