"""The claim protocol as firmware speaks it: identities, OOB secrets, nonces, HMACs, bodies, tokens.

Everything here is pure and synchronous so the simulator, the oracle, the
reference server and the HIL bridge all share one statement of the protocol.
"""

from harness.errors import ProtocolError
from harness.protocol.claim import ClaimRequest, ClaimResponse, user_agent
from harness.protocol.identity import (
    AUTO_REGISTER_PREFIXES,
    case_variant,
    mac_to_device_id,
    normalize_id,
    validate_child_id,
    validate_device_id,
)
from harness.protocol.oob import (
    OOB_SALT,
    derive_oob_v5,
    parse_oob_hex,
)
from harness.protocol.signing import (
    SigningMode,
    claim_message,
    new_nonce,
    sign_claim,
    validate_nonce,
    verify_claim_hmac,
)
from harness.protocol.tokens import TokenCheck, check_token

__all__ = [
    "AUTO_REGISTER_PREFIXES",
    "OOB_SALT",
    "ClaimRequest",
    "ClaimResponse",
    "ProtocolError",
    "SigningMode",
    "TokenCheck",
    "case_variant",
    "check_token",
    "claim_message",
    "derive_oob_v5",
    "mac_to_device_id",
    "new_nonce",
    "normalize_id",
    "parse_oob_hex",
    "sign_claim",
    "user_agent",
    "validate_child_id",
    "validate_device_id",
    "validate_nonce",
    "verify_claim_hmac",
]
