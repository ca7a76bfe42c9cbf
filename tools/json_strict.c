/* json_strict.c — see json_strict.h. */
#include "json_strict.h"

#include <string.h>

int json_has_escaped_nul(const char *buf, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\\') continue;
        /* an escape: "\\u0000" is NUL; "\\\\u0000" is a backslash then text, skipped here */
        if (buf[i + 1] == 'u' && i + 6 <= len && !memcmp(buf + i + 2, "0000", 4)) return 1;
        i++;
    }
    return 0;
}

cJSON *json_parse_strict(const char *buf, size_t len, const char **why) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        *why = "not valid JSON";
        return NULL;
    }
    for (const char *p = end; p && p < buf + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            *why = "not valid JSON (text after the value)";
            return NULL;
        }
    if (json_has_escaped_nul(buf, len)) {
        cJSON_Delete(root);
        *why = "a string holds \\u0000 (NUL), which is not accepted";
        return NULL;
    }
    return root;
}
