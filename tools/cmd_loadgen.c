/* cmd_loadgen.c — `qembed loadgen`: flags for the load generator in loadgen/, then its report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "flags.h"
#include "loadgen/loadgen.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: qembed loadgen [options]\n"
        "Drives any OpenAI-compatible /v1/embeddings endpoint with texts from a JSONL corpus.\n\n"
        "  --url URL                 default http://127.0.0.1:8080/v1/embeddings\n"
        "  --corpus FILE             JSONL {\"text\": ...} (default ../shared/bench/corpus.jsonl)\n"
        "  --concurrency N           requests in flight (default 8)\n"
        "  --inputs-per-request N    texts per request (default 1)\n"
        "  --duration SECONDS        send no new request after this long; those in flight\n"
        "                            finish (default 10 when --requests is not given)\n"
        "  --requests N              stop after N requests (with --duration, whichever comes\n"
        "                            first)\n"
        "  --max-seconds S           hard bound on the whole run: what is still in flight then\n"
        "                            counts as failed (default duration + --timeout, or 600)\n"
        "  --timeout S               per-request timeout (default 120)\n"
        "  --dimensions N            send `dimensions`\n"
        "  --encoding-format F       float | base64\n"
        "  --model NAME              send `model`\n"
        "  --api-key KEY             send Authorization: Bearer KEY\n"
        "  --json                    print one JSON object instead of the table\n\n"
        "A connection answered 429 or 503 pauses for the server's Retry-After (0.1 s without one,\n"
        "at most 5 s) before its next request; the report counts these back-offs.\n\n"
        "Exit status: 0 every request answered 200; 3 some failed (the report counts them by\n"
        "status); 1 none succeeded or the run could not start; 2 bad usage.\n");
}

int cmd_loadgen(int argc, char **argv) {
    loadgen_config c;
    loadgen_config_defaults(&c);
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "qembed loadgen: %s needs a value (or unknown option)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        double x;
        if (!strcmp(a, "--url"))
            c.url = v;
        else if (!strcmp(a, "--corpus"))
            c.corpus = v;
        else if (!strcmp(a, "--model"))
            c.model = v;
        else if (!strcmp(a, "--api-key"))
            c.api_key = v;
        else if (!strcmp(a, "--encoding-format")) {
            if (strcmp(v, "float") && strcmp(v, "base64")) {
                fprintf(stderr, "qembed loadgen: --encoding-format is float or base64\n");
                return 2;
            }
            c.encoding_format = v;
        } else if (!strcmp(a, "--concurrency")) {
            if (flag_double("loadgen", a, v, 1, 4096, &x)) return 2;
            c.concurrency = (int)x;
        } else if (!strcmp(a, "--inputs-per-request")) {
            if (flag_double("loadgen", a, v, 1, 1 << 20, &x)) return 2;
            c.inputs_per_request = (int)x;
        } else if (!strcmp(a, "--duration")) {
            if (flag_double("loadgen", a, v, 0.001, 86400, &x)) return 2;
            c.duration_s = x;
        } else if (!strcmp(a, "--requests")) {
            if (flag_double("loadgen", a, v, 1, 1e12, &x)) return 2;
            c.requests = (long)x;
        } else if (!strcmp(a, "--max-seconds")) {
            if (flag_double("loadgen", a, v, 0.001, 86400, &x)) return 2;
            c.max_seconds = x;
        } else if (!strcmp(a, "--timeout")) {
            if (flag_double("loadgen", a, v, 0.001, 86400, &x)) return 2;
            c.request_timeout_s = x;
        } else if (!strcmp(a, "--dimensions")) {
            if (flag_double("loadgen", a, v, 1, 1 << 20, &x)) return 2;
            c.dimensions = (int)x;
        } else {
            fprintf(stderr, "qembed loadgen: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    loadgen_result r;
    char err[512];
    if (loadgen_run(&c, &r, err, sizeof err) != 0) {
        fprintf(stderr, "qembed loadgen: %s\n", err);
        return 1;
    }
    loadgen_print(&c, &r, json, stdout);
    if (r.ok == 0) return 1;
    return r.errors > 0 ? 3 : 0; /* a scripted benchmark must not mistake a partial run for one */
}
