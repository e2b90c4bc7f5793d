"""The frame format survives logs, garbage and half frames, and counts what it skipped."""

from __future__ import annotations

from harness.hil.frames import Frame, FrameDecoder, LogLine, encode_frame


def test_frames_and_logs_are_told_apart() -> None:
    dec = FrameDecoder()
    stream = (
        b"I (312) claim_probe: booting\r\n"
        + encode_frame({"id": 1, "ok": True, "device_id": "CCDBA795BAA4"}).replace(b"\n", b"\r\n")
        + b"W (400) wifi: no ap\n"
    )
    items = dec.feed(stream[:10]) + dec.feed(stream[10:])
    assert [type(i) for i in items] == [LogLine, Frame, LogLine]
    assert items[1].payload == {"id": 1, "ok": True, "device_id": "CCDBA795BAA4"}
    assert dec.bad_frames == 0


def test_corrupt_and_half_frames_are_counted_not_returned() -> None:
    dec = FrameDecoder()
    good = encode_frame({"id": 2, "ok": True})
    corrupt = good.replace(b'"ok"', b'"oK"')
    half = good[: len(good) // 2] + b"\n"
    items = dec.feed(corrupt + half + b"\xff\xfe\x00junk\n" + good)
    frames = [i for i in items if isinstance(i, Frame)]
    assert frames == [Frame({"id": 2, "ok": True})]
    assert dec.bad_frames == 2
    assert dec.garbage_bytes >= 3


def test_frame_after_log_without_newline_is_found() -> None:
    dec = FrameDecoder()
    items = dec.feed(b"I (1) x: partial" + encode_frame({"event": "boot"}))
    assert items == [LogLine("I (1) x: partial"), Frame({"event": "boot"})]
