"""Store seams of the reference server: the nonce/idempotency store and the registry."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A backing store (Redis, PostgreSQL) cannot be reached; the contract decides what follows."""

    def __init__(self, store: str, reason: str) -> None:
        self.store = store
        self.reason = reason
        super().__init__(f"{store} unavailable: {reason}")
