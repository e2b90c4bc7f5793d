/* probe_frames.c - see probe_frames.h. */
#include "probe_frames.h"

#include <string.h>

uint32_t probe_crc32(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int bit;
    for (i = 0; i < len; i++) {
        crc ^= p[i];
        for (bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

static const char HEX[] = "0123456789abcdef";

int probe_frame_encode(const char *json, size_t json_len, char *out, size_t out_size)
{
    const size_t marker = sizeof(PROBE_MARKER) - 1;
    const size_t total = marker + json_len + 2 + 8 + 1;
    uint32_t crc;
    int i;
    if (json == NULL || out == NULL || out_size < total + 1) {
        return PROBE_FRAME_NOSPACE;
    }
    crc = probe_crc32(json, json_len);
    memcpy(out, PROBE_MARKER, marker);
    memcpy(out + marker, json, json_len);
    out[marker + json_len] = ' ';
    out[marker + json_len + 1] = '*';
    for (i = 0; i < 8; i++) {
        out[marker + json_len + 2 + i] = HEX[(crc >> (28 - 4 * i)) & 0xFu];
    }
    out[total - 1] = '\n';
    out[total] = '\0';
    return (int)total;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int probe_frame_decode(const char *line, size_t len, const char **json, size_t *json_len)
{
    const size_t marker = sizeof(PROBE_MARKER) - 1;
    size_t at, star, body_len, i;
    uint32_t want = 0;
    int found = 0;
    if (line == NULL || json == NULL || json_len == NULL) {
        return PROBE_FRAME_BAD;
    }
    /* The marker may follow a log line that lost its newline. */
    for (at = 0; at + marker <= len; at++) {
        if (memcmp(line + at, PROBE_MARKER, marker) == 0) {
            found = 1;
            break;
        }
    }
    if (!found) {
        return PROBE_FRAME_NONE;
    }
    line += at + marker;
    len -= at + marker;
    /* Exactly " *" + 8 hex digits at the end. */
    if (len < 10 || line[len - 10] != ' ' || line[len - 9] != '*') {
        return PROBE_FRAME_BAD;
    }
    star = len - 10;
    for (i = 0; i < 8; i++) {
        int v = hex_value(line[star + 2 + i]);
        if (v < 0) {
            return PROBE_FRAME_BAD;
        }
        want = (want << 4) | (uint32_t)v;
    }
    body_len = star;
    if (probe_crc32(line, body_len) != want) {
        return PROBE_FRAME_BAD;
    }
    *json = line;
    *json_len = body_len;
    return PROBE_FRAME_OK;
}

void probe_line_init(probe_line_t *lb)
{
    lb->len = 0;
    lb->overflow = 0;
    lb->ready = 0;
    lb->dropped_bytes = 0;
    lb->buf[0] = '\0';
}

int probe_line_feed(probe_line_t *lb, char c)
{
    if (lb->ready) { /* the caller has used the last line */
        lb->len = 0;
        lb->ready = 0;
    }
    if (c == '\n') {
        if (lb->overflow) { /* the tail of an over-long line: drop it all */
            lb->dropped_bytes += lb->len;
            lb->len = 0;
            lb->overflow = 0;
            return 0;
        }
        if (lb->len > 0 && lb->buf[lb->len - 1] == '\r') {
            lb->len--;
        }
        lb->buf[lb->len] = '\0';
        lb->ready = 1;
        return 1;
    }
    if (lb->overflow || lb->len + 1 >= PROBE_MAX_LINE) {
        lb->overflow = 1;
        lb->dropped_bytes++;
        return 0;
    }
    lb->buf[lb->len++] = c;
    return 0;
}
