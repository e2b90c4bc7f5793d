"""The reference v5 claim server: the contract, quirks included, as an executable statement.

``create_app(config)`` builds the FastAPI app; ``EmbeddedServer`` runs it in a
background thread or child process for the fleet commands and the tests.
Imports are lazy so ``harness.server.seed`` stays cheap for the fleet side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.server.config import ServerConfig
    from harness.server.embedded import EmbeddedServer
    from harness.server.seed import Seed, SeedChild, SeedDevice, load_seed

__all__ = ["EmbeddedServer", "Seed", "SeedChild", "SeedDevice", "ServerConfig", "load_seed"]

_WHERE = {
    "ServerConfig": "harness.server.config",
    "EmbeddedServer": "harness.server.embedded",
    "Seed": "harness.server.seed",
    "SeedChild": "harness.server.seed",
    "SeedDevice": "harness.server.seed",
    "load_seed": "harness.server.seed",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
