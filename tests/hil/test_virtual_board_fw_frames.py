"""The firmware's frame code (claim_probe/main/probe_frames.c), built for the host.

The real board and the virtual board must speak the same frames: the C encoder
and decoder are checked against ``harness.hil.frames`` byte for byte.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import zlib

import pytest

from harness.hil.frames import Frame, FrameDecoder, encode_frame
from tests.support import ROOT, require_binary

SRC = ROOT / "firmware_fixtures" / "claim_probe" / "main"


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    gcc = require_binary("gcc")
    out = tmp_path_factory.mktemp("probe") / "libprobeframes.so"
    subprocess.run(
        [gcc, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC",
         str(SRC / "probe_frames.c"), "-o", str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    lib = ctypes.CDLL(str(out))
    lib.probe_crc32.restype = ctypes.c_uint32
    lib.probe_crc32.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.probe_frame_encode.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.probe_frame_decode.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def c_encode(lib: ctypes.CDLL, body: bytes, size: int = 4096) -> bytes | int:
    out = ctypes.create_string_buffer(size)
    n = lib.probe_frame_encode(body, len(body), out, size)
    return out.raw[:n] if n > 0 else n


def c_decode(lib: ctypes.CDLL, line: bytes) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(line, len(line))
    ptr = ctypes.c_char_p()
    length = ctypes.c_size_t()
    rc = lib.probe_frame_decode(buf, len(line), ctypes.byref(ptr), ctypes.byref(length))
    if rc != 0:
        return rc, b""
    start = ctypes.cast(ptr, ctypes.c_void_p).value - ctypes.cast(buf, ctypes.c_void_p).value  # type: ignore[operator]
    return rc, line[start : start + length.value]


@pytest.mark.parametrize("data", [b"", b"a", b"123456789", bytes(range(256)) * 3])
def test_crc32_is_zlibs(lib: ctypes.CDLL, data: bytes) -> None:
    assert lib.probe_crc32(data, len(data)) == zlib.crc32(data)


def test_encode_matches_python_and_decodes_in_python(lib: ctypes.CDLL) -> None:
    payload = {"id": 7, "ok": True, "fw": "5.0.3", "hmac_hex": "ab" * 32}
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    framed = c_encode(lib, body)
    assert framed == encode_frame(payload)
    assert isinstance(framed, bytes)
    decoded = FrameDecoder().feed(b"I (12) x: log\r\n" + framed)
    assert decoded[-1] == Frame(payload)
    assert c_encode(lib, body, size=len(framed)) == -3  # no room for the NUL: refused


def test_decode_python_frames_and_reject_broken_ones(lib: ctypes.CDLL) -> None:
    frame = encode_frame({"id": 1, "cmd": "sign", "child_id": "Child-1"}).rstrip(b"\n")
    rc, body = c_decode(lib, frame)
    assert rc == 0 and json.loads(body)["child_id"] == "Child-1"
    rc, body = c_decode(lib, b"I (5) tag: half a log" + frame)  # marker after a lost newline
    assert rc == 0 and json.loads(body)["cmd"] == "sign"
    assert c_decode(lib, b"I (1) wifi: connected")[0] == -1
    broken = frame.replace(b"Child-1", b"Child-2")  # CRC no longer matches
    assert c_decode(lib, broken)[0] == -2
    assert c_decode(lib, frame[:-1])[0] == -2  # CRC cut short
    assert c_decode(lib, frame[:-9] + b"*zzzzzzzz")[0] == -2
