/* demo_tokenizer.c — learns a few hundred BPE merges from a built-in English sample (the most
 * frequent adjacent pair first, ties broken by the pair's text so the result never varies) and
 * writes them with the 256 byte tokens as a Hugging Face tokenizer.json. */
#include "demo_tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SAMPLE[] =
    "The quick brown fox jumps over the lazy dog. Embedding models turn text into vectors so "
    "that similar meanings land close together. A search engine compares the vector of a query "
    "with the vectors of many documents and returns the nearest ones. This is how retrieval "
    "augmented generation finds the passages that answer a question. The model reads the whole "
    "input, and the hidden state of the last token becomes the embedding of the text. "
    "Documents can be long: a knowledge base holds manuals, articles, source code and messages "
    "in many languages. The service that computes the embeddings must be fast, because every "
    "document in the collection and every query from the users passes through it. "
    "int main(void) { return 0; } for (int i = 0; i < n; i++) { sum += x[i] * y[i]; } "
    "There are thousands of documents in the index and the number keeps growing every day. "
    "When the question is about the weather, the answer is in the forecast; when it is about "
    "the code, the answer is in the repository. Training, testing and serving the models all "
    "need the same tokenizer, and the tokenizer must give the same ids every time.";

static const char *SPECIALS[] = {"<|endoftext|>",
                                 "<|im_start|>",
                                 "<|im_end|>",
                                 "<|object_ref_start|>",
                                 "<|object_ref_end|>",
                                 "<|box_start|>",
                                 "<|box_end|>",
                                 "<|quad_start|>",
                                 "<|quad_end|>",
                                 "<|vision_start|>",
                                 "<|vision_end|>",
                                 "<|vision_pad|>",
                                 "<|image_pad|>",
                                 "<|video_pad|>",
                                 "<tool_call>",
                                 "</tool_call>",
                                 "<|fim_prefix|>",
                                 "<|fim_middle|>",
                                 "<|fim_suffix|>",
                                 "<|fim_pad|>",
                                 "<|repo_name|>",
                                 "<|file_sep|>",
                                 "<tool_response>",
                                 "</tool_response>",
                                 "<think>",
                                 "</think>"};
enum { FIRST_SPECIAL_ID = 151643, N_SPECIAL_FLAGGED = 14 /* the first 14 are "special" */ };

/* GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100 upwards. */
static void byte_char(int b, char out[4]) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b;
    if (!printable) {
        int n = 0;
        for (int x = 0; x < b; x++)
            n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

typedef struct {
    int *toks;
    int len;
} word;

/* Splits the sample like the Qwen pre-tokenizer does for plain ASCII prose: an optional space
 * glued to a run of letters, single digits, or runs of punctuation. */
static int split_words(word *words, int cap) {
    int n = 0;
    const char *p = SAMPLE;
    while (*p && n < cap) {
        const char *s = p;
        if (*p == ' ') p++;
        if ((*p | 32) >= 'a' && (*p | 32) <= 'z')
            while ((*p | 32) >= 'a' && (*p | 32) <= 'z')
                p++;
        else if (*p >= '0' && *p <= '9')
            p++;
        else if (*p && *p != ' ')
            while (*p && *p != ' ' && !((*p | 32) >= 'a' && (*p | 32) <= 'z') &&
                   !(*p >= '0' && *p <= '9'))
                p++;
        if (p == s) p++;
        words[n].len = (int)(p - s);
        words[n].toks = malloc(sizeof(int) * (size_t)words[n].len);
        for (int i = 0; i < words[n].len; i++)
            words[n].toks[i] = (unsigned char)s[i];
        n++;
    }
    return n;
}

/* Makes word one token: its pieces under the merges so far (applied in rank order, as BPE does for
 * a word this short), then merges joining them left to right, ranked after every other. */
static void add_whole_word(const char *word, char (*text)[64], int (*pairs)[2], int *n_tok,
                           int *n_merged, int cap) {
    int toks[64], n = 0;
    for (const char *p = word; *p && n < 64; p++)
        toks[n++] = (unsigned char)*p;
    for (int m = 0; m < *n_merged; m++) {
        int o = 0;
        char joined[64];
        snprintf(joined, sizeof joined, "%s%s", text[pairs[m][0]], text[pairs[m][1]]);
        for (int i = 0; i < n; i++) {
            if (i + 1 < n && toks[i] == pairs[m][0] && toks[i + 1] == pairs[m][1]) {
                for (int t = 256; t < *n_tok; t++)
                    if (!strcmp(text[t], joined)) toks[o] = t;
                o++, i++;
            } else
                toks[o++] = toks[i];
        }
        n = o;
    }
    while (n > 1 && *n_tok < cap && *n_merged < cap) {
        pairs[*n_merged][0] = toks[0], pairs[*n_merged][1] = toks[1];
        (*n_merged)++;
        char joined[64]; /* apart from text: the new entry is written from two others */
        snprintf(joined, sizeof joined, "%s%s", text[toks[0]], text[toks[1]]);
        memcpy(text[*n_tok], joined, sizeof joined);
        toks[1] = (*n_tok)++;
        memmove(toks, toks + 1, sizeof(int) * (size_t)--n);
    }
}

int demo_tokenizer_write(const char *dir, int n_merges, int reranker, char *err, size_t errlen) {
    enum { MAX_TOKENS = 4096, MAX_WORDS = 4096 };
    char(*text)[64] = calloc(MAX_TOKENS, 64); /* token id -> byte-level text */
    int(*pairs)[2] = calloc(MAX_TOKENS, sizeof *pairs);
    int *counts = calloc(1024 * 1024, sizeof(int)); /* pair counts, stride 1024 */
    word *words = calloc(MAX_WORDS, sizeof *words);
    if (!text || !pairs || !counts || !words) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (n_merges > MAX_TOKENS - 256) n_merges = MAX_TOKENS - 256;
    for (int b = 0; b < 256; b++)
        byte_char(b, text[b]);
    int n_words = split_words(words, MAX_WORDS), n_tok = 256, n_merged = 0;
    const int stride = 1024; /* counts[a * stride + b]; merges stay well under 1024 tokens */
    if (n_merges > stride - 256) n_merges = stride - 256;
    for (int m = 0; m < n_merges; m++) {
        memset(counts, 0, sizeof(int) * (size_t)stride * stride);
        for (int w = 0; w < n_words; w++)
            for (int i = 0; i + 1 < words[w].len; i++)
                counts[words[w].toks[i] * stride + words[w].toks[i + 1]]++;
        int best = -1, best_count = 1; /* a pair must occur twice to be worth a merge */
        for (int a = 0; a < n_tok; a++)
            for (int b = 0; b < n_tok; b++) {
                int c = counts[a * stride + b];
                if (c > best_count && strlen(text[a]) + strlen(text[b]) < 63) {
                    best = a * stride + b;
                    best_count = c;
                }
            }
        if (best < 0) break;
        int a = best / stride, b = best % stride;
        pairs[n_merged][0] = a;
        pairs[n_merged][1] = b;
        n_merged++;
        /* Two different pairs may spell the same token ("ab"+"c", "a"+"bc"): reuse its id. */
        char joined[64];
        snprintf(joined, sizeof joined, "%s%s", text[a], text[b]);
        int target = n_tok;
        for (int t = 256; t < n_tok; t++)
            if (!strcmp(text[t], joined)) target = t;
        if (target == n_tok) memcpy(text[n_tok++], joined, sizeof joined);
        for (int w = 0; w < n_words; w++) {
            int o = 0;
            for (int i = 0; i < words[w].len; i++) {
                if (i + 1 < words[w].len && words[w].toks[i] == a && words[w].toks[i + 1] == b) {
                    words[w].toks[o++] = target;
                    i++;
                } else {
                    words[w].toks[o++] = words[w].toks[i];
                }
            }
            words[w].len = o;
        }
    }

    /* a reranker's answer tokens: "yes" and "no", one token each as in Qwen3's vocabulary */
    for (int w = 0; reranker && w < 2; w++)
        add_whole_word(w ? "no" : "yes", text, pairs, &n_tok, &n_merged, MAX_TOKENS);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < (int)(sizeof SPECIALS / sizeof SPECIALS[0]); i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", FIRST_SPECIAL_ID + i);
        cJSON_AddStringToObject(t, "content", SPECIALS[i]);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "lstrip", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "special", i < N_SPECIAL_FLAGGED);
        cJSON_AddItemToArray(added, t);
    }
    cJSON_AddItemToObject(root, "normalizer", cJSON_Parse("{\"type\":\"NFC\"}"));
    cJSON_AddItemToObject(
        root, "pre_tokenizer",
        cJSON_Parse(
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
            "{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
            "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+"
            "|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
            "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
            "\"use_regex\":false}]}"));
    /* an embedding model's tokenizer appends <|endoftext|>, a reranker's (Qwen3's base) none */
    cJSON_AddItemToObject(
        root, "post_processor",
        cJSON_Parse(
            reranker
                ? "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
                  "\"use_regex\":false}"
                : "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\","
                  "\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false},"
                  "{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":{\"id\":\"A\","
                  "\"type_id\":0}},{\"SpecialToken\":{\"id\":\"<|endoftext|>\",\"type_id\":0}}],"
                  "\"pair\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"Sequence\":{\"id\":"
                  "\"B\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"<|endoftext|>\","
                  "\"type_id\":0}}],\"special_tokens\":{\"<|endoftext|>\":{\"id\":"
                  "\"<|endoftext|>\",\"ids\":[151643],\"tokens\":[\"<|endoftext|>\"]}}}]}"));
    cJSON_AddItemToObject(root, "decoder",
                          cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                      "\"trim_offsets\":false,\"use_regex\":false}"));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < n_tok; i++)
        cJSON_AddNumberToObject(vocab, text[i], i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < n_merged; i++) {
        const char *pair[2] = {text[pairs[i][0]], text[pairs[i][1]]};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    }
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    int rc = 0;
    char path[4200];
    const char *files[3][2] = {
        {"tokenizer.json", json},
        {"tokenizer_config.json",
         "{\n  \"tokenizer_class\": \"Qwen2Tokenizer\",\n  \"model_max_length\": 32768,\n"
         "  \"eos_token\": \"<|im_end|>\",\n  \"pad_token\": \"<|endoftext|>\"\n}\n"},
        {"config_sentence_transformers.json",
         "{\n  \"prompts\": {\n    \"query\": \"Instruct: Given a web search query, retrieve "
         "relevant passages that answer the query\\nQuery:\",\n    \"document\": \"\"\n  },\n"
         "  \"default_prompt_name\": null,\n  \"similarity_fn_name\": \"cosine\"\n}\n"}};
    /* the sentence-transformers file marks an embedding folder (a reranker has none) */
    for (int i = 0; i < (reranker ? 2 : 3) && !rc; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i][0]);
        FILE *f = fopen(path, "wb");
        if (!f || !files[i][1] || fputs(files[i][1], f) < 0) {
            snprintf(err, errlen, "cannot write %s", path);
            rc = -1;
        }
        if (f && fclose(f)) rc = -1;
    }
    free(json);
    for (int w = 0; w < n_words; w++)
        free(words[w].toks);
    free(words);
    free(counts);
    free(pairs);
    free(text);
    return rc;
}
