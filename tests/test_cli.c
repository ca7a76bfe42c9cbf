/* test_cli.c — the qembed program as a user runs it: make-random, inspect, embed (ids and text),
 * --help on every sub-command, and clear failures on bad input. */
#include <cjson/cJSON.h>
#include <sys/wait.h>

#include "test_util.h"

#define QEMBED QE_BINARY_DIR "/qembed"

/* Runs a shell command; returns its exit status and (if out) its stdout. */
static int run(const char *cmd, char **out) {
    char path[1100], full[4096];
    snprintf(path, sizeof path, "%s/test-scratch/cli-out-%d.txt", QE_BINARY_DIR, (int)getpid());
    snprintf(full, sizeof full, "{ %s; } > '%s'", cmd, path);
    int st = system(full);
    if (out) *out = tu_read_file(path, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void make_demo(char *dir, size_t cap) {
    tu_scratch_dir(dir, cap, "cli-demo");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, QEMBED " make-random --preset tiny --out '%s/m' --quiet", dir);
    cr_assert_eq(run(cmd, NULL), 0);
    strcat(dir, "/m");
}

Test(cli, help_on_every_command) {
    const char *cmds[] = {"embed",   "tokenize",    "serve",  "bench",   "loadgen",
                          "inspect", "make-random", "rerank", "quantize"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[256], *out;
        snprintf(cmd, sizeof cmd, QEMBED " %s --help", cmds[i]);
        cr_assert_eq(run(cmd, &out), 0, "%s --help", cmds[i]);
        cr_assert(out && strstr(out, "usage: qembed"), "%s --help printed: %s", cmds[i], out);
        free(out);
    }
    cr_assert_neq(run(QEMBED " no-such-command 2>/dev/null", NULL), 0);
}

/* A number flag that is not a number in range is refused: exit 2 and one line naming the flag
 * and the range, before any work (no folder is written). */
Test(cli, bad_number_flags_are_refused) {
    static const struct {
        const char *args, *flag;
    } cases[] = {
        {"make-random --preset tiny --out /nonexistent/x --seed abc", "--seed"},
        {"make-random --preset tiny --out /nonexistent/x --shard-mb -1", "--shard-mb"},
        {"serve --model x --port http", "--port"},
        {"serve --model x --devices 1-0", "--devices"},
        {"serve --model x --devices 0,,1", "--devices"},
        {"loadgen --concurrency 0", "--concurrency"},
        {"embed --model x --dims 12x", "--dims"},
        {"tokenize --threads 0", "--threads"},
        {"bench --model x --iters 0", "--iters"},
        {"bench --model x --workload seq:24,iters=0", "--workload iters"},
        {"bench --model x --workload mix:4:x", "--workload mix"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[512], *out;
        snprintf(cmd, sizeof cmd, QEMBED " %s 2>&1", cases[i].args);
        cr_expect_eq(run(cmd, &out), 2, "%s", cases[i].args);
        cr_expect(out && strstr(out, cases[i].flag) && strstr(out, "wants"), "%s printed: %s",
                  cases[i].args, out);
        free(out);
    }
}

Test(cli, demo_model_embeds_text_and_ids, .timeout = 120) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s'", dir);
    cr_assert_eq(run(cmd, &out), 0);
    cr_assert(strstr(out, "layers         3"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"hello world\"}' '{\"ids\": [1, 2, 3]}' "
             "'{\"text\": \"The quick brown fox\"}' | " QEMBED " embed --model '%s' --dims 32",
             dir);
    cr_assert_eq(run(cmd, &out), 0);
    int lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        cr_assert(j, "not JSON: %s", line);
        cr_assert_eq(cJSON_GetObjectItem(j, "index")->valueint, lines);
        const cJSON *emb = cJSON_GetObjectItem(j, "embedding");
        cr_assert_eq(cJSON_GetArraySize(emb), 32);
        double norm = 0;
        for (const cJSON *v = emb->child; v; v = v->next)
            norm += v->valuedouble * v->valuedouble;
        cr_assert_float_eq(norm, 1.0, 1e-5);
        if (lines == 1) cr_assert_eq(cJSON_GetObjectItem(j, "tokens")->valueint, 3);
        cJSON_Delete(j);
    }
    cr_assert_eq(lines, 3);
    free(out);
}

Test(cli, bad_input_fails_with_line_number, .timeout = 60) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    const char *bad[] = {"{\"ids\": [1, 999999999]}",
                         "{\"ids\": []}",
                         "{\"foo\": 1}",
                         "not json",
                         "{\"ids\": [1.5]}",
                         "{\"text\": \"a\\u0000b\"}",
                         "{\"ids\": [1]} extra",
                         "{\"ids\": [1e300]}",
                         "{\"ids\": [-1]}",
                         "{\"ids\": [1], \"text\": \"which one\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd,
                 "printf '%%s\\n' '{\"ids\": [5]}' '%s' | " QEMBED
                 " embed --model '%s' 2>&1 >/dev/null",
                 bad[i], dir);
        int rc = run(cmd, &out);
        cr_assert_neq(rc, 0, "accepted %s", bad[i]);
        cr_assert(out && (strstr(out, "line 2") || strstr(out, "inputs 0..")), "%s: %s", bad[i],
                  out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, QEMBED " embed --model /nonexistent 2>&1 </dev/null");
    cr_assert_neq(run(cmd, &out), 0);
    cr_assert(strstr(out, "/nonexistent"), "%s", out);
    free(out);
}

/* --instruction and --prompt-name must give exactly the vectors of the formatted text. */
Test(cli, instruction_and_prompt_name_format_queries, .timeout = 60) {
    char dir[1100], cmd[4096], *a, *b, *c;
    make_demo(dir, sizeof dir);
    const char *task = "Given a web search query, retrieve relevant passages that answer the query";
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"Instruct: %s\\nQuery:capital of France\"}' | " QEMBED
             " embed --model '%s'",
             task, dir);
    cr_assert_eq(run(cmd, &a), 0);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"capital of France\"}' | " QEMBED
             " embed --model '%s' --instruction '%s'",
             dir, task);
    cr_assert_eq(run(cmd, &b), 0);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"capital of France\"}' | " QEMBED
             " embed --model '%s' --prompt-name query",
             dir);
    cr_assert_eq(run(cmd, &c), 0);
    cr_assert(a && b && c && strlen(a) > 100);
    cr_assert_str_eq(a, b, "--instruction differs from the formatted text");
    cr_assert_str_eq(a, c, "--prompt-name query differs from the formatted text");
    free(a);
    free(b);
    free(c);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"x\"}' | " QEMBED
             " embed --model '%s' --prompt-name nope 2>&1",
             dir);
    cr_assert_neq(run(cmd, &a), 0);
    cr_assert(strstr(a, "nope"), "%s", a);
    free(a);
}

/* Audit 1: --max-length shorter than the instruction's tokens cut the instruction itself, so
 * every text got the same vector; now the instruction is never cut and such a line is refused,
 * while a limit with room keeps the instruction and cuts the text's end. */
Test(cli, max_length_never_cuts_the_instruction, .timeout = 60) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    const char *task = "Given a web search query, retrieve relevant passages that answer the query";
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"hello\"}' '{\"text\": \"totally different\"}' | " QEMBED
             " embed --model '%s' --instruction '%s' --max-length 4 2>&1 >/dev/null",
             dir, task);
    cr_assert_neq(run(cmd, &out), 0, "embedded with the instruction cut: %s", out);
    cr_assert(out && strstr(out, "line 1") && strstr(out, "no room"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"hello\"}' | " QEMBED
             " embed --model '%s' --prompt-name query --max-length 2 2>&1 >/dev/null",
             dir);
    cr_assert_neq(run(cmd, &out), 0, "embedded with the prompt cut: %s", out);
    cr_assert(out && strstr(out, "no room"), "%s", out);
    free(out);
    /* a cut that leaves room: exactly the formatted text's first 59 ids (tokenized on their own
     * here, without the end token) and the end token, as an {"ids"} line gives them */
    const char *text = "capital of France and much more text after it, and more, and more";
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"Instruct: %s\\nQuery:%s\"}' | " QEMBED
             " tokenize --model '%s' --no-special 2>/dev/null",
             task, text, dir);
    cr_assert_eq(run(cmd, &out), 0);
    cJSON *tj = cJSON_Parse(out);
    const cJSON *all = cJSON_GetObjectItem(tj, "ids");
    cr_assert(cJSON_GetArraySize(all) > 60, "the formatted text is %d ids: %s",
              cJSON_GetArraySize(all), out);
    free(out);
    char ids[2048] = "";
    size_t used = 0;
    for (int i = 0; i < 59; i++)
        used += (size_t)snprintf(ids + used, sizeof ids - used, "%d, ",
                                 cJSON_GetArrayItem(all, i)->valueint);
    snprintf(ids + used, sizeof ids - used, "151643");
    cJSON_Delete(tj);
    char *cut, *want;
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"%s\"}' | " QEMBED
             " embed --model '%s' --instruction '%s' --max-length 60",
             text, dir, task);
    cr_assert_eq(run(cmd, &cut), 0);
    snprintf(cmd, sizeof cmd, "printf '%%s\\n' '{\"ids\": [%s]}' | " QEMBED " embed --model '%s'",
             ids, dir);
    cr_assert_eq(run(cmd, &want), 0);
    cr_assert(cut && want && strstr(cut, "\"tokens\": 60"), "%s", cut);
    cr_expect_str_eq(cut, want,
                     "the cut is not the instruction, the text's start and the end token");
    free(cut);
    free(want);
}

/* make-random --alibi: the config names ALiBi (and no rope_theta), inspect says so, and the
 * engine runs it: the same weights embed differently than under RoPE. */
Test(cli, make_random_alibi_inspects_and_embeds, .timeout = 120) {
    char dir[1100], rope[1100], cmd[4096], *out, *a, *b;
    cr_assert_eq(run(QEMBED " make-random --help", &out), 0);
    cr_assert(out && strstr(out, "--alibi"), "make-random --help: %s", out);
    free(out);
    make_demo(rope, sizeof rope);
    tu_scratch_dir(dir, sizeof dir, "cli-alibi");
    snprintf(cmd, sizeof cmd, QEMBED " make-random --preset tiny --alibi --out '%s/m' --quiet",
             dir);
    cr_assert_eq(run(cmd, NULL), 0);
    strcat(dir, "/m");
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cfg = tu_read_file(path, NULL);
    cr_assert(cfg, "no %s", path);
    cr_expect(strstr(cfg, "\"position_embedding_type\": \"alibi\""), "%s", cfg);
    cr_expect(!strstr(cfg, "rope_theta"), "%s", cfg);
    free(cfg);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s'", dir);
    cr_assert_eq(run(cmd, &out), 0);
    cr_expect(out && strstr(out, "ALiBi"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s'", rope);
    cr_assert_eq(run(cmd, &out), 0);
    cr_expect(out && strstr(out, "RoPE, theta 1e+06"), "%s", out);
    free(out);
    const char *in = "printf '%%s\\n' '{\"ids\": [11, 22, 33, 44, 55, 66, 77]}' | " QEMBED
                     " embed --model '%s' --dims 32";
    snprintf(cmd, sizeof cmd, in, dir);
    cr_assert_eq(run(cmd, &a), 0);
    snprintf(cmd, sizeof cmd, in, rope);
    cr_assert_eq(run(cmd, &b), 0);
    cr_assert(a && b && strstr(a, "\"embedding\""), "%s", a);
    cr_expect(strcmp(a, b) != 0, "ALiBi and RoPE give the same vector: %s", a);
    free(a);
    free(b);
}

/* A reranker from make-random (tied, and untied with its own lm_head): inspect names the task and
 * the rows, `qembed rerank` scores JSONL documents in input order or sorted, and each command
 * refuses the other kind of model with a message saying what to do. */
Test(cli, make_random_reranker_inspects_and_ranks, .timeout = 300) {
    char dir[1100], emb[1100], cmd[4096], *out;
    make_demo(emb, sizeof emb);
    tu_scratch_dir(dir, sizeof dir, "cli-rerank");
    for (int untied = 0; untied <= 1; untied++) {
        snprintf(cmd, sizeof cmd,
                 QEMBED " make-random --preset tiny --task rerank%s --out '%s/m%d' --quiet",
                 untied ? " --untied" : "", dir, untied);
        cr_assert_eq(run(cmd, NULL), 0, "%s", cmd);
        snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s/m%d'", dir, untied);
        cr_assert_eq(run(cmd, &out), 0);
        cr_expect(out && strstr(out, "task           rerank"), "%s", out);
        cr_expect(out && strstr(out, untied ? "of lm_head.weight" : "embed_tokens.weight (tied)"),
                  "%s", out);
        free(out);
    }
    const char *docs = "printf '%s\\n' '{\"text\": \"the fox jumps\"}' '\"search vectors\"' "
                       "'{\"text\": \"the weather\"}' '{\"text\": \"\"}' | ";
    snprintf(cmd, sizeof cmd, "%s" QEMBED " rerank --model '%s/m1' --query 'a fox'", docs, dir);
    cr_assert_eq(run(cmd, &out), 0, "%s", cmd);
    float score[4];
    int index[4], n = 0;
    for (char *line = out; line && *line && n < 4; n++) {
        int tokens;
        cr_assert_eq(sscanf(line, "{\"index\": %d, \"score\": %f, \"tokens\": %d}", &index[n],
                            &score[n], &tokens),
                     3, "line: %s", line);
        cr_expect_eq(index[n], n, "input order");
        cr_expect(score[n] > 0 && score[n] < 1 && tokens > 100, "%s", line);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    cr_expect_eq(n, 4, "%s", out);
    free(out);
    /* --sort --top-n 2: the two best, best first */
    int best = 0, second = -1;
    for (int i = 1; i < 4; i++)
        if (score[i] > score[best]) best = i;
    for (int i = 0; i < 4; i++)
        if (i != best && (second < 0 || score[i] > score[second])) second = i;
    snprintf(cmd, sizeof cmd,
             "%s" QEMBED " rerank --model '%s/m1' --query 'a fox' --sort --top-n 2", docs, dir);
    cr_assert_eq(run(cmd, &out), 0);
    int i0 = -1, i1 = -1;
    cr_assert(out && sscanf(out, "{\"index\": %d", &i0) == 1, "%s", out);
    cr_assert(strchr(out, '\n') && sscanf(strchr(out, '\n') + 1, "{\"index\": %d", &i1) == 1, "%s",
              out);
    cr_expect(i0 == best && i1 == second, "sorted: %d, %d; want %d, %d:\n%s", i0, i1, best, second,
              out);
    cr_expect(!strchr(strchr(out, '\n') + 1, '\n')[1], "more than 2 lines: %s", out);
    free(out);
    /* --print-ids: each line carries its prompt, as many ids as it says tokens, the template's
     * first id (<|im_start|>) first */
    snprintf(cmd, sizeof cmd, "%s" QEMBED " rerank --model '%s/m1' --query 'a fox' --print-ids",
             docs, dir);
    cr_assert_eq(run(cmd, &out), 0);
    int tokens = 0, first_id = 0;
    const char *ids = out ? strstr(out, "\"ids\": [") : NULL;
    cr_assert(ids && sscanf(strstr(out, "\"tokens\": "), "\"tokens\": %d", &tokens) == 1 &&
                  sscanf(ids, "\"ids\": [%d", &first_id) == 1,
              "%s", out);
    int commas = 0;
    for (const char *c = ids; *c && *c != ']'; c++)
        commas += *c == ',';
    cr_expect_eq(commas + 1, tokens, "ids on the line vs its tokens");
    cr_expect_eq(first_id, 151644, "the prompt starts with <|im_start|>");
    free(out);
    /* each command refuses the other kind of folder, naming the way out */
    snprintf(cmd, sizeof cmd, "%s" QEMBED " embed --model '%s/m0' 2>&1", docs, dir);
    cr_expect_eq(run(cmd, &out), 1);
    cr_expect(out && strstr(out, "is a reranker") && strstr(out, "--task embed"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s" QEMBED " rerank --model '%s' --query q 2>&1", docs, emb);
    cr_expect_eq(run(cmd, &out), 1);
    cr_expect(out && strstr(out, "is not a reranker") && strstr(out, "--task rerank"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf 'not json\\n' | " QEMBED " rerank --model '%s/m0' --query q 2>&1", dir);
    cr_expect_eq(run(cmd, &out), 1);
    cr_expect(out && strstr(out, "line 1"), "%s", out);
    free(out);
}

/* --shard I/N: N runs split one input by record index, keep the global index, and the merge that
 * --help and docs/scaling.md give (paste the outputs line by line) is byte for byte the output of
 * one unsharded run. */
Test(cli, embed_shards_merge_to_the_unsharded_output, .timeout = 300) {
    char dir[1100], model[1100], cmd[4096];
    make_demo(model, sizeof model);
    tu_scratch_dir(dir, sizeof dir, "cli-shard");
    char in[1200];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    FILE *f = fopen(in, "w");
    cr_assert(f);
    for (int i = 0; i < 11; i++) {
        if (i == 4) fputs("\n", f); /* a blank line is not a record */
        if (i % 2)
            fprintf(f, "{\"text\": \"record %d: the quick brown fox %d\"}\n", i, i * i);
        else
            fprintf(f, "{\"ids\": [%d, %d, %d]}\n", 100 + i, 7, 200 + i);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, QEMBED " embed --model '%s' --input '%s' --output '%s/all.jsonl'",
             model, in, dir);
    cr_assert_eq(run(cmd, NULL), 0, "%s", cmd);
    for (int s = 0; s < 3; s++) {
        snprintf(cmd, sizeof cmd,
                 QEMBED " embed --model '%s' --input '%s' --shard %d/3 --output '%s/out.%d'", model,
                 in, s, dir, s);
        cr_assert_eq(run(cmd, NULL), 0, "%s", cmd);
        char path[1300], *text;
        snprintf(path, sizeof path, "%s/out.%d", dir, s);
        cr_assert((text = tu_read_file(path, NULL)));
        int lines = 0;
        for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL, lines++) {
            int index = -1;
            cr_assert_eq(sscanf(l, "{\"index\": %d", &index), 1, "%s", l);
            cr_expect_eq(index % 3, s, "shard %d holds index %d", s, index);
        }
        cr_expect_eq(lines, s < 2 ? 4 : 3, "shard %d: %d lines", s, lines);
        free(text);
    }
    char *merged, *all;
    snprintf(cmd, sizeof cmd, "cd '%s' && paste -d '\\n' out.0 out.1 out.2 | grep -v '^$'", dir);
    cr_assert_eq(run(cmd, &merged), 0);
    snprintf(cmd, sizeof cmd, "cat '%s/all.jsonl'", dir);
    cr_assert_eq(run(cmd, &all), 0);
    cr_assert(merged && all && strlen(all) > 0);
    cr_expect_str_eq(merged, all, "the merged shards differ from the unsharded run");
    free(merged), free(all);
    cr_expect_eq(run(QEMBED " embed --model x --shard 3/3 2>/dev/null", NULL), 2);
    cr_expect_eq(run(QEMBED " embed --model x --shard 1/0 2>/dev/null", NULL), 2);
}

/* --tensor-parallel N on the CPU: embed gives the one-rank vectors (to the last printed digit or
 * so), bench says tp=N, and a split the heads do not allow is refused naming the valid values. */
Test(cli, tensor_parallel_flags, .timeout = 120) {
    char model[1100], cmd[4096], *one, *two, *out;
    make_demo(model, sizeof model);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"ids\": [5, 6, 7, 8]}' | " QEMBED " embed --model '%s' --dims 8%s",
             model, "");
    cr_assert_eq(run(cmd, &one), 0);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"ids\": [5, 6, 7, 8]}' | " QEMBED
             " embed --model '%s' --dims 8 --tensor-parallel 2",
             model);
    cr_assert_eq(run(cmd, &two), 0);
    float a[8], b[8];
    const char *fmt =
        "{\"index\": 0, \"tokens\": 4, \"embedding\": [%f, %f, %f, %f, %f, %f, %f, %f";
    cr_assert_eq(sscanf(one, fmt, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7]), 8, "%s",
                 one);
    cr_assert_eq(sscanf(two, fmt, &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7]), 8, "%s",
                 two);
    for (int i = 0; i < 8; i++)
        cr_expect_leq(fabsf(a[i] - b[i]), 1e-5f, "value %d: %f vs %f", i, a[i], b[i]);
    free(one), free(two);
    snprintf(cmd, sizeof cmd,
             QEMBED " bench --model '%s' --backend cpu --seq-len 16 --batch-tokens 32 --iters 1 "
                    "--warmup 0 --tensor-parallel 2",
             model);
    cr_assert_eq(run(cmd, &out), 0);
    cr_expect(out && strstr(out, " tp=2"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"ids\": [5]}' | " QEMBED
             " embed --model '%s' --tensor-parallel 3 2>&1",
             model);
    cr_expect_eq(run(cmd, &out), 1);
    cr_expect(out && strstr(out, "valid: 1, 2"), "%s", out);
    free(out);
}

/* bench --devices: after the one-engine timing, the workload on every engine at once, with the
 * engines' tokens/s and the scaling efficiency in a result_dp line (CPU engines here). */
Test(cli, bench_devices_reports_data_parallel_scaling, .timeout = 120) {
    char model[1100], cmd[4096], *out;
    make_demo(model, sizeof model);
    snprintf(cmd, sizeof cmd,
             QEMBED " bench --model '%s' --backend cpu --seq-len 16 --batch-tokens 64 --iters 2 "
                    "--warmup 0 --devices 0,1",
             model);
    cr_assert_eq(run(cmd, &out), 0);
    const char *dp = out ? strstr(out, "result_dp ") : NULL;
    int devices = 0;
    double tps = 0, one = 0, eff = 0;
    cr_assert(dp && sscanf(dp,
                           "result_dp devices=%d tokens_per_s=%lf one_engine_tokens_per_s=%lf "
                           "efficiency=%lf",
                           &devices, &tps, &one, &eff) == 4,
              "%s", out);
    cr_expect_eq(devices, 2);
    cr_expect(tps > 0 && one > 0 && fabs(eff - tps / (2 * one)) < 1e-3, "%s", dp);
    free(out);
}

/* quantize: the demo folder as a q4_k_m GGUF; inspect reads it (types per kind of tensor,
 * parameters, bytes), embed runs it like the folder and bench times it, text through the GGUF's
 * tokenizer. */
Test(cli, quantize_inspect_and_embed_a_gguf, .timeout = 120) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             QEMBED " quantize --model '%s' --type q4_k_m --out '%s.gguf' 2>'%s.log'", dir, dir,
             dir);
    cr_assert_eq(run(cmd, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s.log", dir);
    out = tu_read_file(cmd, NULL);
    cr_expect(out && strstr(out, "tensor 35 of 35"), "progress line: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s.gguf'", dir);
    cr_assert_eq(run(cmd, &out), 0);
    cr_expect(out && strstr(out, "layers         3") && strstr(out, "attn_output.weight") &&
                  strstr(out, "Q4_K x3") && strstr(out, "parameters") &&
                  strstr(out, "bits per weight") && strstr(out, "end token      151643 appended"),
              "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "printf '%%s\\n' '{\"text\": \"hello world\"}' | " QEMBED
             " embed --model '%s.gguf' --input -",
             dir);
    cr_assert_eq(run(cmd, &out), 0);
    cr_expect(out && strstr(out, "\"embedding\""), "%s", out);
    free(out);
    /* bench takes the file too (its geometry from the metadata) */
    snprintf(cmd, sizeof cmd,
             QEMBED " bench --model '%s.gguf' --backend cpu --seq-len 16 --batch-tokens 32 "
                    "--iters 1 --warmup 0 2>&1",
             dir);
    cr_assert_eq(run(cmd, &out), 0, "%s", out);
    cr_expect(out && strstr(out, "result backend=cpu tokens=32"), "%s", out);
    free(out);
    /* tokenize reads the GGUF's tokenizer: the same ids as the folder's tokenizer.json */
    char *ids[2];
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "printf '%%s\\n' '{\"text\": \"hello world <|endoftext|>\"}' | " QEMBED
                 " tokenize --model '%s%s' 2>/dev/null",
                 dir, k ? ".gguf" : "");
        cr_assert_eq(run(cmd, &ids[k]), 0, "tokenize %s", k ? "gguf" : "folder");
    }
    cr_expect(ids[0] && ids[1] && strstr(ids[0], "\"ids\"") && !strcmp(ids[0], ids[1]),
              "folder: %s\ngguf: %s", ids[0], ids[1]);
    free(ids[0]);
    free(ids[1]);
    const char *bad[][2] = {{"--type q3_k", "not one of"}, {"", "required"}};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, QEMBED " quantize --model '%s' --out /dev/null %s 2>&1", dir,
                 bad[i][0]);
        cr_expect_eq(run(cmd, &out), 2, "%s", bad[i][0]);
        cr_expect(out && strstr(out, bad[i][1]), "%s: %s", bad[i][0], out);
        free(out);
    }
    snprintf(cmd, sizeof cmd, QEMBED " quantize --model /nonexistent --type f16 --out x.gguf 2>&1");
    cr_expect_eq(run(cmd, &out), 1);
    cr_expect(out && strstr(out, "/nonexistent"), "%s", out);
    free(out);
}

/* A GGUF from another writer: the benchmark helper's (standard-library Python, f32 matrices)
 * embeds ids exactly like the folder; it writes add_eos_token false, which inspect reports. */
Test(cli, python_helper_gguf_embeds_like_the_folder, .timeout = 120) {
    if (system("command -v python3 >/dev/null 2>&1") != 0) cr_skip_test("python3 absent");
    char dir[1100], cmd[4096], *a, *b;
    make_demo(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "python3 " QE_SOURCE_DIR
             "/benchmarks/llamacpp/safetensors_to_gguf.py '%s' '%s-py.gguf' "
             "--type f32 >/dev/null",
             dir, dir);
    cr_assert_eq(run(cmd, NULL), 0);
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "printf '%%s\\n' '{\"ids\": [1, 2, 3, 151643]}' '{\"ids\": [7, 8]}' | " QEMBED
                 " embed --model '%s%s' --input -",
                 dir, k ? "-py.gguf" : "");
        cr_assert_eq(run(cmd, k ? &b : &a), 0);
    }
    cr_expect(a && b && strstr(a, "embedding") && !strcmp(a, b), "folder: %.200s\ngguf: %.200s", a,
              b);
    free(a);
    free(b);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s-py.gguf'", dir);
    cr_assert_eq(run(cmd, &a), 0);
    cr_expect(a && strstr(a, "end token      none appended"), "%s", a);
    free(a);
}

/* What would destroy a user's files is refused before any work: quantize --out over a device, a
 * folder or the input model's own files; --input and --output naming one file (opening the output
 * would empty the input); make-random into a folder that already holds files. */
Test(cli, commands_refuse_to_overwrite_what_they_read, .timeout = 120) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    static const struct {
        const char *args, *says;
    } cases[] = {
        {"quantize --model '%1$s' --type q8_0 --out /dev/null", "not a regular file"},
        {"quantize --model '%1$s' --type q8_0 --out '%1$s'", "not a regular file"},
        {"quantize --model '%1$s' --type q8_0 --out '%1$s/model.safetensors'", "model being read"},
        {"quantize --model '%1$s' --type q8_0 --out '%1$s/config.json'", "model being read"},
        {"embed --model '%1$s' --input '%1$s/in.jsonl' --output '%1$s/in.jsonl'", "same file"},
        {"tokenize --model '%1$s' --input '%1$s/in.jsonl' --output '%1$s/./in.jsonl'", "same file"},
        {"embed --model '%1$s' --input '%1$s'", "is a folder"},
        {"embed --model '%1$s' --output '%1$s/in.jsonl' < '%1$s/in.jsonl'", "same file"},
        {"make-random --preset tiny --out '%1$s'", "already holds files"},
    };
    snprintf(cmd, sizeof cmd, "echo '{\"text\": \"kept\"}' > '%s/in.jsonl'", dir);
    cr_assert_eq(run(cmd, NULL), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[2048];
        snprintf(args, sizeof args, cases[i].args, dir);
        snprintf(cmd, sizeof cmd, QEMBED " %s 2>&1 >/dev/null%s", args,
                 strchr(args, '<') ? "" : " </dev/null");
        cr_expect_neq(run(cmd, &out), 0, "%s", args);
        cr_expect(out && strstr(out, cases[i].says), "%s printed: %s", args, out);
        free(out);
    }
    /* nothing was touched: the folder still loads and the input kept its line */
    char *in = NULL;
    snprintf(cmd, sizeof cmd, "cat '%s/in.jsonl'", dir);
    cr_expect_eq(run(cmd, &in), 0);
    cr_expect(in && strstr(in, "kept"), "in.jsonl now holds: %s", in);
    free(in);
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s' >/dev/null", dir);
    cr_expect_eq(run(cmd, NULL), 0, "the model folder no longer loads");
}

/* A write that fails (a full disk) or a read that cannot start ends the command with a message
 * naming the file, never a silent exit. */
Test(cli, io_errors_are_said, .timeout = 60) {
    char dir[1100], cmd[4096], *out;
    make_demo(dir, sizeof dir);
    const char *cmds[] = {"embed", "tokenize"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "echo '{\"text\": \"x\"}' | " QEMBED " %s --model '%s' --output /dev/full 2>&1",
                 cmds[i], dir);
        cr_expect_eq(run(cmd, &out), 1, "%s", cmds[i]);
        cr_expect(out && strstr(out, "cannot write /dev/full"), "%s printed: %s", cmds[i], out);
        free(out);
        snprintf(cmd, sizeof cmd, QEMBED " %s --model '%s' --input /nonexistent.jsonl 2>&1",
                 cmds[i], dir);
        cr_expect_eq(run(cmd, &out), 1, "%s", cmds[i]);
        cr_expect(out && strstr(out, "/nonexistent.jsonl"), "%s printed: %s", cmds[i], out);
        free(out);
    }
    /* an unknown flag at the end is not called a flag that needs a value */
    snprintf(cmd, sizeof cmd, QEMBED " embed --model '%s' --bogus 2>&1", dir);
    cr_expect_eq(run(cmd, &out), 2);
    cr_expect(out && strstr(out, "--bogus") && strstr(out, "is no option"), "%s", out);
    free(out);
}

/* make-random --force over an earlier sharded model: the old shards and index go (the loader would
 * prefer the index), so the folder holds exactly the new model, bitwise a fresh folder's. */
Test(cli, make_random_force_replaces_the_earlier_model, .timeout = 120) {
    char dir[1100], cmd[4096], *fresh, *forced;
    tu_scratch_dir(dir, sizeof dir, "cli-force");
    snprintf(cmd, sizeof cmd,
             QEMBED
             " make-random --preset tiny --seed 7 --shard-mb 5 --out '%s/m' --quiet && " QEMBED
             " make-random --preset tiny --seed 8 --task rerank --out '%s/m' --force --quiet "
             "&& " QEMBED " make-random --preset tiny --seed 8 --task rerank --out '%s/n' --quiet",
             dir, dir, dir);
    cr_assert_eq(run(cmd, NULL), 0);
    snprintf(cmd, sizeof cmd, "ls '%s/m'", dir);
    cr_assert_eq(run(cmd, &forced), 0);
    cr_expect(!strstr(forced, "index.json") && !strstr(forced, "-of-") &&
                  !strstr(forced, "sentence_transformers"),
              "stale files left: %s", forced);
    free(forced);
    snprintf(cmd, sizeof cmd, "cmp '%s/m/model.safetensors' '%s/n/model.safetensors'", dir, dir);
    cr_expect_eq(run(cmd, NULL), 0, "the forced folder's weights differ from a fresh folder's");
    snprintf(cmd, sizeof cmd, QEMBED " inspect --model '%s/m'", dir);
    cr_assert_eq(run(cmd, &fresh), 0);
    cr_expect(strstr(fresh, "task           rerank"), "%s", fresh);
    free(fresh);
}
