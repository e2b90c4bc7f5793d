/*
 * claim_signer.c - v5 OOB derivation and the claim HMAC over mbedtls.
 *
 * Written as firmware code: C89-compatible, stack buffers of fixed size, every
 * input length checked before it is copied. Uses only the mbedtls_md API,
 * which is the same in mbedtls 2.28 (Debian) and 3.x (ESP-IDF 5).
 */
#include "claim_signer.h"

#include <string.h>

#include <mbedtls/md.h>

#define SHA256_BYTES 32
#define SALT_LEN (sizeof(CLAIM_OOB_SALT) - 1)

static const char HEX_LOWER[] = "0123456789abcdef";
static const char HEX_UPPER[] = "0123456789ABCDEF";

/* strlen that stops looking after max characters (C89 has no strnlen). */
static unsigned long bounded_len(const char *s, unsigned long max)
{
    unsigned long n = 0;
    while (n < max && s[n] != '\0') {
        n++;
    }
    return n;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static void to_hex(const unsigned char *in, unsigned long len, const char *digits, char *out)
{
    unsigned long i;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

/* The same set Python's str.strip() removes from ASCII text, minus \x1c-\x1f. */
static int is_ascii_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * Append an ID to buf at *pos, as held or stripped and lower-cased. The caller
 * has checked len <= CLAIM_ID_MAX and sized buf for it.
 */
static void append_id(unsigned char *buf, unsigned long *pos, const char *id, unsigned long len,
                      int normalize)
{
    unsigned long start = 0;
    unsigned long end = len;
    unsigned long i;
    if (normalize) {
        while (start < end && is_ascii_space(id[start])) {
            start++;
        }
        while (end > start && is_ascii_space(id[end - 1])) {
            end--;
        }
    }
    for (i = start; i < end; i++) {
        char c = id[i];
        if (normalize && c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        buf[(*pos)++] = (unsigned char)c;
    }
}

static int sha256(const unsigned char *in, unsigned long len, unsigned char out[SHA256_BYTES])
{
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (info == NULL || mbedtls_md(info, in, (size_t)len, out) != 0) {
        return CLAIM_ERR_CRYPTO;
    }
    return CLAIM_OK;
}

int claim_hex_to_bytes(const char *hex, unsigned char *out, unsigned long out_len)
{
    unsigned long i;
    if (hex == NULL || out == NULL) {
        return CLAIM_ERR_NULL;
    }
    if (bounded_len(hex, 2 * out_len + 1) != 2 * out_len) {
        return CLAIM_ERR_HEX;
    }
    for (i = 0; i < out_len; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return CLAIM_ERR_HEX;
        }
        out[i] = (unsigned char)((hi << 4) | lo);
    }
    return CLAIM_OK;
}

int claim_derive_oob(const char *device_id, char out_hex[CLAIM_HEX_OUT])
{
    /* device_id ":" SALT, then h1 (64 hex) SALT */
    unsigned char buf[CLAIM_ID_MAX + 1 + SALT_LEN];
    unsigned char digest[SHA256_BYTES];
    char h1[2 * SHA256_BYTES + 1];
    unsigned long len;
    int rc;

    if (device_id == NULL || out_hex == NULL) {
        return CLAIM_ERR_NULL;
    }
    len = bounded_len(device_id, CLAIM_ID_MAX + 1);
    if (len > CLAIM_ID_MAX) {
        return CLAIM_ERR_ID_TOO_LONG;
    }
    memcpy(buf, device_id, len);
    buf[len] = ':';
    memcpy(buf + len + 1, CLAIM_OOB_SALT, SALT_LEN);
    rc = sha256(buf, len + 1 + SALT_LEN, digest);
    if (rc != CLAIM_OK) {
        return rc;
    }
    to_hex(digest, SHA256_BYTES, HEX_LOWER, h1);

    memcpy(buf, h1, 2 * SHA256_BYTES);
    memcpy(buf + 2 * SHA256_BYTES, CLAIM_OOB_SALT, SALT_LEN);
    rc = sha256(buf, 2 * SHA256_BYTES + SALT_LEN, digest);
    if (rc != CLAIM_OK) {
        return rc;
    }
    to_hex(digest, SHA256_BYTES, HEX_UPPER, out_hex);
    return CLAIM_OK;
}

int claim_sign(const char *device_id, const char *child_id, const char *nonce_hex,
               const unsigned char oob[CLAIM_OOB_BYTES], int mode,
               char out_hex[CLAIM_HEX_OUT])
{
    unsigned char msg[2 * CLAIM_ID_MAX + CLAIM_NONCE_HEX_MAX / 2];
    unsigned char mac[SHA256_BYTES];
    const mbedtls_md_info_t *info;
    unsigned long device_len;
    unsigned long child_len;
    unsigned long nonce_len;
    unsigned long pos = 0;
    unsigned long i;

    if (device_id == NULL || child_id == NULL || nonce_hex == NULL || oob == NULL
        || out_hex == NULL) {
        return CLAIM_ERR_NULL;
    }
    if (mode != CLAIM_MODE_LEGACY && mode != CLAIM_MODE_NORMALIZED) {
        return CLAIM_ERR_MODE;
    }
    device_len = bounded_len(device_id, CLAIM_ID_MAX + 1);
    child_len = bounded_len(child_id, CLAIM_ID_MAX + 1);
    if (device_len > CLAIM_ID_MAX || child_len > CLAIM_ID_MAX) {
        return CLAIM_ERR_ID_TOO_LONG;
    }
    nonce_len = bounded_len(nonce_hex, CLAIM_NONCE_HEX_MAX + 1);
    if (nonce_len > CLAIM_NONCE_HEX_MAX) {
        return CLAIM_ERR_NONCE_LONG;
    }
    if (nonce_len % 2 != 0) {
        return CLAIM_ERR_NONCE_ODD;
    }
    for (i = 0; i < nonce_len; i++) {
        if (hex_value(nonce_hex[i]) < 0) {
            return CLAIM_ERR_NONCE_HEX;
        }
    }

    append_id(msg, &pos, device_id, device_len, mode == CLAIM_MODE_NORMALIZED);
    append_id(msg, &pos, child_id, child_len, mode == CLAIM_MODE_NORMALIZED);
    for (i = 0; i < nonce_len; i += 2) {
        msg[pos++] = (unsigned char)((hex_value(nonce_hex[i]) << 4) | hex_value(nonce_hex[i + 1]));
    }

    info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (info == NULL || mbedtls_md_hmac(info, oob, CLAIM_OOB_BYTES, msg, (size_t)pos, mac) != 0) {
        return CLAIM_ERR_CRYPTO;
    }
    to_hex(mac, SHA256_BYTES, HEX_LOWER, out_hex);
    return CLAIM_OK;
}

const char *claim_strerror(int code)
{
    switch (code) {
    case CLAIM_OK:
        return "ok";
    case CLAIM_ERR_NULL:
        return "missing argument";
    case CLAIM_ERR_ID_TOO_LONG:
        return "ID longer than 128 bytes";
    case CLAIM_ERR_NONCE_HEX:
        return "nonce is not hexadecimal";
    case CLAIM_ERR_NONCE_ODD:
        return "nonce has an odd number of hex characters; must be whole bytes";
    case CLAIM_ERR_NONCE_LONG:
        return "nonce longer than 64 hex characters";
    case CLAIM_ERR_MODE:
        return "mode must be legacy or normalized";
    case CLAIM_ERR_CRYPTO:
        return "mbedtls error";
    case CLAIM_ERR_HEX:
        return "not the expected number of hex characters";
    default:
        return "unknown error";
    }
}
