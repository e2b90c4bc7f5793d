"""Firmware fixtures: the host build of the C signer, test app images, the claim-probe project."""
