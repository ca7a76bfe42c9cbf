/* fuzz_serve_request.c — libFuzzer target for the HTTP server's request parsers: any body given
 * to /v1/embeddings, /embed, /tokenize and /decode must give a job or a clean error, never a
 * crash or a leak. The tokenizer comes from QE_FUZZ_MODEL (default: the tiny fixture). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/serve_internal.h"
#include "tokenizer/tokenizer.h"

static serve_server server;

static void setup(void) {
    const char *dir = getenv("QE_FUZZ_MODEL");
    if (!dir) dir = "../shared/fixtures/tiny-qwen3-embed";
    tok_tokenizer *t;
    char err[256];
    if (tok_load(dir, &t, err, sizeof err) != TOK_OK) {
        fprintf(stderr, "fuzz_serve_request: %s (set QE_FUZZ_MODEL)\n", err);
        abort();
    }
    serve_config_defaults(&server.cfg);
    server.tok = t;
    server.served_name = "tiny";
    server.width = 64;
    server.vocab = tok_vocab_size(t);
    server.max_positions = 40960;
    server.max_input_tokens = 512;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!server.tok) setup();
    const char *body = (const char *)data;
    srv_error e;
    for (int route = 0; route < 2; route++) {
        memset(&e, 0, sizeof e);
        srv_job *j = srv_parse_embed(&server, route ? ROUTE_TEI : ROUTE_OPENAI, body, size, &e);
        if (j) srv_job_unref(j);
        else if (e.status < 400 || e.status > 599) abort(); /* refused without an error status */
    }
    size_t len = 0;
    memset(&e, 0, sizeof e);
    free(srv_handle_tokenize(&server, body, size, &len, &e));
    memset(&e, 0, sizeof e);
    free(srv_handle_decode(&server, body, size, &len, &e));
    return 0;
}
