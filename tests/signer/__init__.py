"""Firmware-side golden vectors: the C claim signer (mbedtls) against the Python core."""
