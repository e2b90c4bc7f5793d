/*
 * host_main.c - host CLI around the claim signer core, for golden vectors and
 * for checking the Python core against the C one in bulk.
 *
 *   claim_signer vectors                 golden vectors JSON on stdout
 *   claim_signer derive ID               v5 OOB secret, upper-case hex
 *   claim_signer sign DEVICE CHILD NONCE OOBHEX legacy|normalized
 *   claim_signer batch                   stdin lines DEVICE\tCHILD\tNONCE\tOOBHEX,
 *                                        stdout lines OOB(DEVICE)\tLEGACY\tNORMALIZED
 *
 * Exit status: 0 ok, 2 bad input or usage (message on stderr), 1 internal error.
 */
#include <stdio.h>
#include <string.h>

#include "claim_signer.h"

#define PROG "claim_signer"
#define LINE_MAX_BYTES 1024

struct vector_case {
    const char *name;
    const char *device_id;
    const char *child_id;
    const char *nonce;
};

/* Edge cases chosen for the compatibility question: case, padding, prefixes, bounds. */
static const struct vector_case CASES[] = {
    {"contract-mac-upper", "CCDBA795BAA4", "child-001", "00112233445566778899aabbccddeeff"},
    {"contract-mac-lower", "ccdba795baa4", "child-001", "00112233445566778899aabbccddeeff"},
    {"mac-mixed-case", "CcDbA795bAa4", "Child-001", "00112233445566778899aabbccddeeff"},
    {"mac-surrounding-spaces", "  CCDBA795BAA4 ", " child-001  ",
     "00112233445566778899aabbccddeeff"},
    {"mac-surrounding-tab-newline", "\tCCDBA795BAA4\n", "child-001\r\n",
     "00112233445566778899aabbccddeeff"},
    {"device-id-8-chars", "A1B2C3D4", "k", "0123456789abcdef"},
    {"device-id-8-chars-lower", "a1b2c3d4", "k", "0123456789abcdef"},
    {"device-id-64-chars", "Teddy-ESP32-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
     "Child_0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrst",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
    {"device-id-64-chars-lower", "esp32-0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
     "child_0123456789-abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrst",
     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
    {"device-id-64-chars-spaces",
     " Teddy-ESP32-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ", " Child_64 ",
     "0123456789abcdef"},
    {"nonce-16-hex", "CCDBA795BAA4", "child-001", "0123456789abcdef"},
    {"nonce-64-hex", "CCDBA795BAA4", "child-001",
     "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"},
    {"nonce-mixed-case-hex", "CCDBA795BAA4", "child-001", "DeadBeefCafeF00D0123456789ABCDEF"},
    {"prefixed-teddy", "Teddy-ESP32-0001", "child-42", "a1a2a3a4a5a6a7a8a9aaabacadaeafb0"},
    {"prefixed-teddy-lower", "teddy-esp32-0001", "child-42", "a1a2a3a4a5a6a7a8a9aaabacadaeafb0"},
    {"prefixed-teddy-upper", "TEDDY-ESP32-0001", "CHILD-42", "a1a2a3a4a5a6a7a8a9aaabacadaeafb0"},
    {"prefixed-esp32", "esp32-a1b2c3", "kid_7", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"},
    {"prefixed-esp32-upper", "ESP32-A1B2C3", "Kid_7", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"},
    {"prefixed-esp32-spaces", " esp32-a1b2c3 ", "kid_7 ", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"},
    {"underscore-ids", "dev_ice_0001", "Kid_A", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
};

static void fail(const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s\n", PROG, what, claim_strerror(rc));
}

/* A JSON string as Python's json.dumps writes ASCII text, so the file is canonical. */
static void put_json_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"':
            fputs("\\\"", stdout);
            break;
        case '\\':
            fputs("\\\\", stdout);
            break;
        case '\n':
            fputs("\\n", stdout);
            break;
        case '\r':
            fputs("\\r", stdout);
            break;
        case '\t':
            fputs("\\t", stdout);
            break;
        case '\b':
            fputs("\\b", stdout);
            break;
        case '\f':
            fputs("\\f", stdout);
            break;
        default:
            if (c < 0x20) {
                printf("\\u%04x", (unsigned)c);
            } else {
                putchar((int)c);
            }
        }
    }
    putchar('"');
}

static void put_field(const char *key, const char *value, int last)
{
    printf("      \"%s\": ", key);
    put_json_string(value);
    fputs(last ? "\n" : ",\n", stdout);
}

static int cmd_vectors(void)
{
    size_t n = sizeof(CASES) / sizeof(CASES[0]);
    size_t i;
    printf("{\n  \"generator\": \"firmware_fixtures/signer: claim_signer vectors\",\n");
    printf("  \"salt\": \"%s\",\n  \"cases\": [\n", CLAIM_OOB_SALT);
    for (i = 0; i < n; i++) {
        const struct vector_case *c = &CASES[i];
        char oob_hex[CLAIM_HEX_OUT];
        unsigned char oob[CLAIM_OOB_BYTES];
        char legacy[CLAIM_HEX_OUT];
        char normalized[CLAIM_HEX_OUT];
        int rc = claim_derive_oob(c->device_id, oob_hex);
        if (rc == CLAIM_OK) {
            rc = claim_hex_to_bytes(oob_hex, oob, CLAIM_OOB_BYTES);
        }
        if (rc == CLAIM_OK) {
            rc = claim_sign(c->device_id, c->child_id, c->nonce, oob, CLAIM_MODE_LEGACY, legacy);
        }
        if (rc == CLAIM_OK) {
            rc = claim_sign(c->device_id, c->child_id, c->nonce, oob, CLAIM_MODE_NORMALIZED,
                            normalized);
        }
        if (rc != CLAIM_OK) {
            fail(c->name, rc);
            return 1;
        }
        printf("    {\n");
        put_field("name", c->name, 0);
        put_field("device_id", c->device_id, 0);
        put_field("child_id", c->child_id, 0);
        put_field("nonce", c->nonce, 0);
        put_field("oob_secret", oob_hex, 0);
        put_field("hmac_legacy", legacy, 0);
        put_field("hmac_normalized", normalized, 1);
        printf(i + 1 < n ? "    },\n" : "    }\n");
    }
    printf("  ]\n}\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_derive(const char *device_id)
{
    char out[CLAIM_HEX_OUT];
    int rc = claim_derive_oob(device_id, out);
    if (rc != CLAIM_OK) {
        fail("derive: device_id", rc);
        return 2;
    }
    printf("%s\n", out);
    return 0;
}

static int parse_mode(const char *text, int *mode)
{
    if (strcmp(text, "legacy") == 0) {
        *mode = CLAIM_MODE_LEGACY;
        return CLAIM_OK;
    }
    if (strcmp(text, "normalized") == 0) {
        *mode = CLAIM_MODE_NORMALIZED;
        return CLAIM_OK;
    }
    return CLAIM_ERR_MODE;
}

static int cmd_sign(char **argv)
{
    unsigned char oob[CLAIM_OOB_BYTES];
    char out[CLAIM_HEX_OUT];
    int mode = 0;
    int rc = claim_hex_to_bytes(argv[3], oob, CLAIM_OOB_BYTES);
    if (rc != CLAIM_OK) {
        fprintf(stderr, "%s: sign: oob_secret: must be 64 hex characters\n", PROG);
        return 2;
    }
    rc = parse_mode(argv[4], &mode);
    if (rc != CLAIM_OK) {
        fail("sign", rc);
        return 2;
    }
    rc = claim_sign(argv[0], argv[1], argv[2], oob, mode, out);
    if (rc != CLAIM_OK) {
        fail("sign", rc);
        return rc == CLAIM_ERR_CRYPTO ? 1 : 2;
    }
    printf("%s\n", out);
    return 0;
}

/* Split line in place at tabs into exactly n fields; 0 on success. */
static int split_tabs(char *line, char **fields, int n)
{
    int i = 0;
    fields[i++] = line;
    for (; *line != '\0'; line++) {
        if (*line == '\t') {
            if (i == n) {
                return -1;
            }
            *line = '\0';
            fields[i++] = line + 1;
        }
    }
    return i == n ? 0 : -1;
}

static int cmd_batch(void)
{
    char line[LINE_MAX_BYTES];
    unsigned long lineno = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *fields[4];
        char oob_hex[CLAIM_HEX_OUT];
        char legacy[CLAIM_HEX_OUT];
        char normalized[CLAIM_HEX_OUT];
        unsigned char oob[CLAIM_OOB_BYTES];
        size_t len = strlen(line);
        int rc;
        lineno++;
        if (len > 0 && line[len - 1] == '\n') {
            line[--len] = '\0';
        } else if (!feof(stdin)) {
            fprintf(stderr, "%s: batch: line %lu: longer than %d bytes\n", PROG, lineno,
                    LINE_MAX_BYTES - 2);
            return 2;
        }
        if (split_tabs(line, fields, 4) != 0) {
            fprintf(stderr, "%s: batch: line %lu: expected 4 tab-separated fields\n", PROG,
                    lineno);
            return 2;
        }
        if (claim_hex_to_bytes(fields[3], oob, CLAIM_OOB_BYTES) != CLAIM_OK) {
            fprintf(stderr, "%s: batch: line %lu: oob_secret: must be 64 hex characters\n", PROG,
                    lineno);
            return 2;
        }
        rc = claim_derive_oob(fields[0], oob_hex);
        if (rc == CLAIM_OK) {
            rc = claim_sign(fields[0], fields[1], fields[2], oob, CLAIM_MODE_LEGACY, legacy);
        }
        if (rc == CLAIM_OK) {
            rc = claim_sign(fields[0], fields[1], fields[2], oob, CLAIM_MODE_NORMALIZED,
                            normalized);
        }
        if (rc != CLAIM_OK) {
            fprintf(stderr, "%s: batch: line %lu: %s\n", PROG, lineno, claim_strerror(rc));
            return rc == CLAIM_ERR_CRYPTO ? 1 : 2;
        }
        printf("%s\t%s\t%s\n", oob_hex, legacy, normalized);
    }
    if (ferror(stdin)) {
        fprintf(stderr, "%s: batch: error reading stdin\n", PROG);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: %s vectors | derive ID | sign DEVICE CHILD NONCE OOBHEX legacy|normalized"
            " | batch\n",
            PROG);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "vectors") == 0) {
        return cmd_vectors();
    }
    if (argc == 3 && strcmp(argv[1], "derive") == 0) {
        return cmd_derive(argv[2]);
    }
    if (argc == 7 && strcmp(argv[1], "sign") == 0) {
        return cmd_sign(argv + 2);
    }
    if (argc == 2 && strcmp(argv[1], "batch") == 0) {
        return cmd_batch();
    }
    return usage();
}
