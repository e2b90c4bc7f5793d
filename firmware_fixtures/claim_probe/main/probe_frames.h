/*
 * probe_frames.h - the claim-probe line protocol (harness/hil/frames.py) in C.
 *
 * A frame is one line: "@CP1 <compact JSON> *<crc32 of the JSON, 8 lower-case
 * hex>\n". CRC-32 is zlib's (reflected 0xEDB88320, init and final XOR
 * 0xFFFFFFFF). Plain C99 with no ESP-IDF dependency, so the host build checks it
 * against the Python decoder byte for byte.
 */
#ifndef PROBE_FRAMES_H
#define PROBE_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PROBE_MARKER "@CP1 "
#define PROBE_MAX_LINE 4096

#define PROBE_FRAME_OK 0
#define PROBE_FRAME_NONE (-1)    /* no marker in the line: a log line */
#define PROBE_FRAME_BAD (-2)     /* marker, but broken CRC or format */
#define PROBE_FRAME_NOSPACE (-3) /* output buffer too small */

uint32_t probe_crc32(const void *data, size_t len);

/* "@CP1 " json " *" crc "\n" into out (NUL-terminated); returns its length or NOSPACE. */
int probe_frame_encode(const char *json, size_t json_len, char *out, size_t out_size);

/* Find a frame in one line (newline removed); json and json_len get the JSON body. */
int probe_frame_decode(const char *line, size_t len, const char **json, size_t *json_len);

/* Assembles bytes into lines; a line longer than PROBE_MAX_LINE - 1 is dropped. */
typedef struct {
    char buf[PROBE_MAX_LINE];
    size_t len;
    int overflow;
    int ready;
    unsigned long dropped_bytes;
} probe_line_t;

void probe_line_init(probe_line_t *lb);

/* Feed one byte; returns 1 when lb->buf holds a complete line ("\r\n" or "\n", stripped). */
int probe_line_feed(probe_line_t *lb, char c);

#ifdef __cplusplus
}
#endif

#endif /* PROBE_FRAMES_H */
