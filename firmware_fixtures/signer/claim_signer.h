/*
 * claim_signer.h - the device side of the teddy claim protocol, in C the way
 * the ESP32 firmware does it (mbedtls), so the Python core can be checked
 * against it byte for byte.
 *
 * Portable C89/C99, no heap in this code, bounded buffers: it compiles for
 * ESP-IDF as is and is loaded by the host harness through ctypes. (mbedtls's
 * one-shot mbedtls_md_hmac allocates its own small context internally, as it
 * does on the board; the functions are reentrant.)
 *
 * Byte layout (see shared CONTRACT.md section 1):
 *   h1  = lowercase_hex(SHA256(device_id ":" SALT))
 *   oob = UPPERCASE_hex(SHA256(h1 SALT))            SALT = CLAIM_OOB_SALT
 *   mac = lowercase_hex(HMAC-SHA256(key = oob bytes,
 *                                   msg = device_id || child_id || nonce bytes))
 * CLAIM_MODE_LEGACY signs the IDs as held; CLAIM_MODE_NORMALIZED signs
 * strip() + lower() of both IDs. Normalisation is ASCII only (the contract's
 * IDs are ASCII): whitespace is space, \t, \n, \r, \v, \f.
 */
#ifndef CLAIM_SIGNER_H
#define CLAIM_SIGNER_H

#ifdef __cplusplus
extern "C" {
#endif

#define CLAIM_OOB_SALT "ai-teddy-bear-oob-secret-v1"
#define CLAIM_OOB_BYTES 32
/* Longest ID accepted, in bytes, surrounding whitespace included. */
#define CLAIM_ID_MAX 128
/* Longest nonce accepted, in hex characters (32 bytes). */
#define CLAIM_NONCE_HEX_MAX 64
/* Hex output buffers: 64 characters and a terminating NUL. */
#define CLAIM_HEX_OUT 65

#define CLAIM_MODE_LEGACY 0
#define CLAIM_MODE_NORMALIZED 1

#define CLAIM_OK 0
#define CLAIM_ERR_NULL (-1)         /* a required pointer is NULL */
#define CLAIM_ERR_ID_TOO_LONG (-2)  /* an ID is longer than CLAIM_ID_MAX bytes */
#define CLAIM_ERR_NONCE_HEX (-3)    /* nonce has a non-hex character */
#define CLAIM_ERR_NONCE_ODD (-4)    /* nonce has an odd number of hex characters */
#define CLAIM_ERR_NONCE_LONG (-5)   /* nonce is longer than CLAIM_NONCE_HEX_MAX */
#define CLAIM_ERR_MODE (-6)         /* mode is neither legacy nor normalized */
#define CLAIM_ERR_CRYPTO (-7)       /* mbedtls reported an error */
#define CLAIM_ERR_HEX (-8)          /* claim_hex_to_bytes: bad hex or wrong length */

/* v5 OOB derivation over device_id exactly as held: 64 UPPER-case hex + NUL. */
int claim_derive_oob(const char *device_id, char out_hex[CLAIM_HEX_OUT]);

/*
 * The claim HMAC: 64 lower-case hex + NUL. nonce_hex is 0..64 hex characters
 * of either case, even length (the server's 16..64 rule is the server's, so a
 * harness can still sign a short nonce on purpose).
 */
int claim_sign(const char *device_id, const char *child_id, const char *nonce_hex,
               const unsigned char oob[CLAIM_OOB_BYTES], int mode,
               char out_hex[CLAIM_HEX_OUT]);

/* Decode exactly 2 * out_len hex characters (either case) into out. */
int claim_hex_to_bytes(const char *hex, unsigned char *out, unsigned long out_len);

/* A short, static, human-readable text for a return code. */
const char *claim_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* CLAIM_SIGNER_H */
