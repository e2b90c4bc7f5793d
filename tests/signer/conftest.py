"""Build the real C signer once per session; gcc, make and mbedtls are required in CI."""

from __future__ import annotations

import pytest

from harness.signer import CSigner, CSignerBuild, build_c_signer
from tests.support import require_binary


@pytest.fixture(scope="session")
def c_build() -> CSignerBuild:
    """The host CLI and shared library, built with make if missing or stale."""
    require_binary("gcc")
    require_binary("make")
    return build_c_signer()


@pytest.fixture(scope="session")
def c_signer(c_build: CSignerBuild) -> CSigner:
    """The C core loaded through ctypes, as the virtual board will load it."""
    return CSigner(c_build.library)
