"""A board behind the Signer seam: the board signs with its own crypto and its own secret.

A board's natural interface is ``sign(child_id, nonce) -> (device_id, hmac_hex,
body)``: it holds its device ID, its OOB secret (derived by the firmware, never
sent over the wire) and its signing mode (fixed by the firmware version). The
:class:`~harness.signer.Signer` seam asks for more freedom than that
(``sign(device_id, child_id, nonce, oob, mode)``), so :class:`BoardSigner` does
what the seam asks only when the board can do exactly that, and refuses with a
``ProtocolError`` otherwise. It never quietly computes an answer on the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.errors import ProtocolError
from harness.hil.board_errors import BoardError
from harness.hil.bridge import SerialBoard
from harness.protocol import derive_oob_v5
from harness.protocol.signing import SIGNING_MODES, SigningMode


@dataclass(frozen=True, slots=True)
class BoardIdentity:
    """What a board says about itself (the ``identity`` command)."""

    device_id: str
    mac: str
    fw: str
    project: str
    hmac_mode: SigningMode
    elf_sha256: str = ""

    @classmethod
    def from_reply(cls, reply: dict[str, Any], board: str) -> BoardIdentity:
        missing = [k for k in ("device_id", "mac", "fw", "hmac_mode") if not reply.get(k)]
        if missing:
            raise BoardError(f"{board}: identity reply lacks {', '.join(missing)}")
        mode = reply["hmac_mode"]
        if mode not in SIGNING_MODES:
            raise BoardError(f"{board}: identity reports unknown hmac_mode {mode!r}")
        return cls(
            device_id=str(reply["device_id"]),
            mac=str(reply["mac"]).upper(),
            fw=str(reply["fw"]),
            project=str(reply.get("project", "")),
            hmac_mode=mode,
            elf_sha256=str(reply.get("elf_sha256", "")),
        )


@dataclass(frozen=True, slots=True)
class BoardSignature:
    """One claim signed by a board: the body is byte for byte what the firmware would POST."""

    device_id: str
    child_id: str
    nonce: str
    hmac_hex: str
    body: bytes


class BoardSigner:
    """Signs claims on a board over the serial bridge."""

    name = "board"

    def __init__(self, board: SerialBoard, identity: BoardIdentity | None = None) -> None:
        self.board = board
        self._identity = identity

    @property
    def identity(self) -> BoardIdentity:
        if self._identity is None:
            self._identity = BoardIdentity.from_reply(self.board.identity(), self.board.name)
        return self._identity

    def sign_claim(self, child_id: str, nonce: str | None = None) -> BoardSignature:
        """The board signs ``child_id`` with ``nonce`` (or a nonce it draws itself)."""
        args: dict[str, Any] = {"child_id": child_id}
        if nonce is not None:
            args["nonce"] = nonce
        reply = self.board.request("sign", **args)
        for key in ("device_id", "nonce", "hmac_hex", "body"):
            if not isinstance(reply.get(key), str):
                raise BoardError(f"{self.board.name}: sign reply lacks {key}")
        if nonce is not None and reply["nonce"] != nonce:
            raise BoardError(f"{self.board.name}: signed another nonce than the one given")
        body = reply["body"].encode()
        try:
            fields = json.loads(body)
        except ValueError:
            raise BoardError(f"{self.board.name}: sign reply body is not JSON") from None
        if fields.get("hmac_hex") != reply["hmac_hex"] or fields.get("nonce") != reply["nonce"]:
            raise BoardError(f"{self.board.name}: sign reply body disagrees with its fields")
        return BoardSignature(
            device_id=reply["device_id"],
            child_id=str(fields.get("child_id", child_id)),
            nonce=reply["nonce"],
            hmac_hex=reply["hmac_hex"],
            body=body,
        )

    # -- the Signer seam ---------------------------------------------------------------

    def derive(self, device_id: str) -> str:
        """The secret this board's v5 firmware derives; only for the board's own device ID.

        The board never sends its secret; v5 firmware derives it from its device
        ID (contract section 1), so the Python core can compute the same value
        to provision a server. Any other ID is refused: this board holds no
        secret for it.
        """
        self._own(device_id)
        return derive_oob_v5(device_id)

    def sign(
        self, device_id: str, child_id: str, nonce_hex: str, oob: bytes, mode: SigningMode
    ) -> str:
        """The board's HMAC, if the request is one the board can honour as asked."""
        ident = self._own(device_id)
        if mode != ident.hmac_mode:
            raise ProtocolError(
                "mode", f"board {self.board.name} signs {ident.hmac_mode} (firmware {ident.fw})"
            )
        if bytes(oob) != bytes.fromhex(derive_oob_v5(device_id)):
            raise ProtocolError("oob_secret", "a board signs only with the secret it derives")
        return self.sign_claim(child_id, nonce_hex).hmac_hex

    def _own(self, device_id: str) -> BoardIdentity:
        ident = self.identity
        if device_id != ident.device_id:
            raise ProtocolError("device_id", f"board {self.board.name} is another device")
        return ident
