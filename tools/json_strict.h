/* json_strict.h — cJSON parsing for untrusted input (HTTP bodies, JSONL lines), stricter than
 * cJSON alone: exactly one value with only whitespace after it; no raw control byte
 * (U+0000..U+001F) inside a string and none but space, tab, CR and LF between values (RFC 8259;
 * cJSON takes raw bytes into strings, and a raw NUL silently cuts the C string it makes); no
 * escaped NUL (\u0000) in a string, which cJSON would cut at too; no key twice in one object (cJSON
 * would keep both and lookups would see the first). */
#ifndef QE_TOOLS_JSON_STRICT_H
#define QE_TOOLS_JSON_STRICT_H
#include <cjson/cJSON.h>
#include <stddef.h>

/* Returns the parsed value, or NULL with *why set to a short reason (static text) that reads
 * after "the body is" ("not valid JSON ...", "not accepted: ..."). */
cJSON *json_parse_strict(const char *buf, size_t len, const char **why);

/* 1 when a JSON text holds the escape \u0000 inside a string. */
int json_has_escaped_nul(const char *buf, size_t len);

/* Decodes the JSON string starting after its opening quote, up to its closing quote, into out
 * (at least strlen(p) + 1 bytes, NUL-terminated); returns its byte length. For text cJSON already
 * accepted that holds an escaped NUL, which cJSON's C strings cannot carry. */
size_t json_unescape_string(const char *p, char *out);

/* Strict UTF-8: no overlongs, no surrogates, nothing past U+10FFFF. */
int json_utf8_valid(const unsigned char *s, size_t n);

/* 1 when a key or string value anywhere in root is not valid UTF-8: path gets where ("user",
 * "input[1]", "extra.k"), *is_key whether the key itself is the invalid one. */
int json_find_invalid_utf8(const cJSON *root, char *path, size_t cap, int *is_key);

/* Where (byte offset) a JSON text holds a lone UTF-16 surrogate escape (what JavaScript writes
 * for a string cut inside a surrogate pair, "\ud800"), -1 if none: what json_parse_strict's
 * refusal does not say, so a server can answer "invalid UTF-8 at byte N". */
long json_lone_surrogate_at(const char *buf, size_t len);

#endif
