/* json_strict.h — cJSON parsing for untrusted input (HTTP bodies, JSONL lines), stricter than
 * cJSON alone: exactly one value with only whitespace after it, and no escaped NUL (\u0000) in a
 * string, which cJSON would silently cut at. */
#ifndef QE_TOOLS_JSON_STRICT_H
#define QE_TOOLS_JSON_STRICT_H
#include <cjson/cJSON.h>
#include <stddef.h>

/* Returns the parsed value, or NULL with *why set to a short reason (static text). */
cJSON *json_parse_strict(const char *buf, size_t len, const char **why);

/* 1 when a JSON text holds the escape \u0000 inside a string. */
int json_has_escaped_nul(const char *buf, size_t len);

/* Decodes the JSON string starting after its opening quote, up to its closing quote, into out
 * (at least strlen(p) + 1 bytes, NUL-terminated); returns its byte length. For text cJSON already
 * accepted that holds an escaped NUL, which cJSON's C strings cannot carry. */
size_t json_unescape_string(const char *p, char *out);

#endif
