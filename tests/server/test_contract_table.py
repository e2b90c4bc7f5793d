"""The contract's cases against every one of the 32 flag combinations, on both store backends.

The expected status codes come from ``expected()`` below, written from
CONTRACT.md section 2 (not from the server code). One server per combination
and backend; all cases run against it over one kept-alive connection.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.flags import Flags
from harness.protocol import ClaimResponse, check_token, derive_oob_v5
from harness.server import EmbeddedServer, ServerConfig
from tests.support.httpclient import Client, Reply
from tests.support.world import World, claim_body, random_oob

COMBOS = Flags.all_combinations()
BACKENDS = ["memory", "redis+postgresql"]


def expected(case: str, f: Flags) -> list[int]:
    """Status codes per step, straight from the contract (Redis up)."""
    idem, auto, norm = f.enable_idempotency, f.enable_auto_register, f.normalize_ids_in_hmac
    legacy_signed = 401 if norm else 200  # step 5: raw IDs unless NORMALIZE_IDS_IN_HMAC
    normalized_signed = 200 if norm else 401
    table = {
        "first_claim": [200],
        "identical_retry": [200, 200 if idem else 409],
        "same_nonce_other_hmac": [200, 409],
        "mixed_case_id_legacy_signing": [legacy_signed],
        "mixed_case_id_normalized_signing": [normalized_signed],
        "mixed_case_child_legacy_signing": [legacy_signed],
        "mixed_case_child_normalized_signing": [normalized_signed],
        # the pattern is checked on the raw value: padding is a 422 whatever the flags
        "padded_id_legacy_signing": [422],
        # idempotency on stores and compares the HMAC string as sent: upper case differs
        "hmac_resent_upper_case": [200, 409],
        # the nonce is lower-cased by the validator: the same nonce in upper case is a reuse
        "nonce_resent_upper_case": [200, 200 if idem else 409],
        # auto-registered with derive_oob_v5(lower-case d): lower-case firmware matches ...
        "unknown_prefixed_lower_case": [200, 200] if auto else [404, 404],
        # ... firmware deriving from its upper-case ID never does, and stays broken.
        "unknown_prefixed_upper_case": [401, 401] if auto else [404, 404],
        "unknown_other_device": [404],
        "unknown_device_identical_retry": [404, 404 if idem else 409],
        "disabled_device": [403],
        "disabled_device_bad_hmac": [403],  # step 4 (device) comes before step 5 (HMAC)
        "unknown_child": [404],
        "unknown_child_bad_hmac": [401],  # step 5 (HMAC) comes before step 6 (child)
        "inactive_child": [404],
        # the nonce is recorded before the HMAC check: the corrected retry is a replay
        "bad_hmac_then_corrected": [401, 409],
        # same nonce + same HMAC carries on with idempotency on, so the 401 repeats
        "bad_hmac_identical_retry": [401, 401 if idem else 409],
        "extra_field_ignored": [200],
        "invalid_body_does_not_burn_nonce": [422, 200],
        "malformed_bodies": [422] * len(MALFORMED),
    }
    return table[case]


# body, field the 422 must name (None: the body as a whole)
MALFORMED: list[tuple[Any, str | None]] = [
    (b"not json", None),
    (b"", None),
    (b"[1, 2]", None),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16}, "hmac_hex"),
    ({"device_id": "short12", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64},
     "device_id"),
    ({"device_id": "teddy.esp32.0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64},
     "device_id"),
    ({"device_id": 12345678, "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64},
     "device_id"),
    ({"device_id": "teddy-esp32-0001", "child_id": "", "nonce": "00" * 16, "hmac_hex": "0" * 64},
     "child_id"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c" * 65, "nonce": "00" * 16,
      "hmac_hex": "0" * 64}, "child_id"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "0" * 33, "hmac_hex": "0" * 64},
     "nonce"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "zz" * 16, "hmac_hex": "0" * 64},
     "nonce"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 7, "hmac_hex": "0" * 64},
     "nonce"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 33,
      "hmac_hex": "0" * 64}, "nonce"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 63},
     "hmac_hex"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16,
      "hmac_hex": "g" * 64}, "hmac_hex"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64,
      "timestamp": "now"}, "timestamp"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64,
      "firmware_version": 5}, "firmware_version"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64,
      "firmware_version": "5" * 33}, "firmware_version"),
    ({"device_id": "teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16, "hmac_hex": "0" * 64,
      "firmware_version": "5.0 beta"}, "firmware_version"),
    ({"device_id": " teddy-esp32-0001", "child_id": "c1", "nonce": "00" * 16,
      "hmac_hex": "0" * 64}, "device_id"),
]  # fmt: skip


def build_cases(w: World) -> dict[str, list[Any]]:
    """The request bodies of each case, in order."""
    retry = claim_body(w.lower, w.child, w.lower_oob)
    base = claim_body(w.lower, w.child, w.lower_oob)
    other_hmac = claim_body(w.lower, w.child, random_oob(), nonce=base["nonce"])
    bad = claim_body(w.lower, w.child, random_oob())
    corrected = claim_body(w.lower, w.child, w.lower_oob, nonce=bad["nonce"])
    bad_again = claim_body(w.lower, w.child, random_oob())
    kept = claim_body(w.lower, w.child, w.lower_oob)
    upper_hmac = claim_body(w.lower, w.child, w.lower_oob)
    upper_nonce = claim_body(w.lower, w.child, w.lower_oob)
    unknown_retry = claim_body(f"other-{w.tag}-dev2", w.child, random_oob())
    new_lower = w.unknown_prefixed("new")
    new_upper = f"Teddy-ESP32-{w.tag}-NEW"  # prefixed, but held in mixed case
    return {
        "first_claim": [
            claim_body(w.lower, w.child, w.lower_oob, firmware_version="5.0.1", timestamp=1)
        ],
        "identical_retry": [retry, retry],
        "same_nonce_other_hmac": [base, other_hmac],
        "mixed_case_id_legacy_signing": [claim_body(w.upper, w.child, w.upper_oob)],
        "mixed_case_id_normalized_signing": [
            claim_body(w.upper, w.child, w.upper_oob, "normalized")
        ],
        "mixed_case_child_legacy_signing": [claim_body(w.lower, w.child.upper(), w.lower_oob)],
        "mixed_case_child_normalized_signing": [
            claim_body(w.lower, w.child.upper(), w.lower_oob, "normalized")
        ],
        "padded_id_legacy_signing": [claim_body(f" {w.lower} ", w.child, w.lower_oob)],
        "unknown_prefixed_lower_case": [
            claim_body(new_lower, w.child, derive_oob_v5(new_lower)) for _ in range(2)
        ],
        "unknown_prefixed_upper_case": [
            claim_body(new_upper, w.child, derive_oob_v5(new_upper)) for _ in range(2)
        ],
        "unknown_other_device": [claim_body(f"other-{w.tag}-dev", w.child, random_oob())],
        "unknown_device_identical_retry": [unknown_retry, unknown_retry],
        "disabled_device": [claim_body(w.disabled, w.child, w.disabled_oob)],
        "disabled_device_bad_hmac": [claim_body(w.disabled, w.child, random_oob())],
        "unknown_child": [claim_body(w.lower, f"nobody-{w.tag}", w.lower_oob)],
        "unknown_child_bad_hmac": [claim_body(w.lower, f"nobody-{w.tag}", random_oob())],
        "inactive_child": [claim_body(w.lower, w.child_off, w.lower_oob)],
        "bad_hmac_then_corrected": [bad, corrected],
        "bad_hmac_identical_retry": [bad_again, bad_again],
        "hmac_resent_upper_case": [
            upper_hmac,
            dict(upper_hmac, hmac_hex=upper_hmac["hmac_hex"].upper()),
        ],
        "nonce_resent_upper_case": [
            upper_nonce,
            dict(upper_nonce, nonce=upper_nonce["nonce"].upper()),
        ],
        "extra_field_ignored": [claim_body(w.lower, w.child, w.lower_oob, extra={"x": 1})],
        "invalid_body_does_not_burn_nonce": [dict(kept, hmac_hex=kept["hmac_hex"][:-2]), kept],
        "malformed_bodies": [body for body, _ in MALFORMED],
    }


def _check_reply(case: str, i: int, body: Any, reply: Reply, secret: str) -> list[str]:
    """Shape checks that hold whatever the flags: headers, error bodies, token claims."""
    problems = []
    where = f"{case}[{i}]"
    if not reply.headers.get("x-correlation-id"):
        problems.append(f"{where}: no X-Correlation-Id")
    if reply.status == 200:
        parsed = ClaimResponse.from_dict(reply.json())
        assert parsed.token_type == "Bearer" and parsed.expires_in == 3600
        for kind in ("access", "refresh"):
            token = parsed.access_token if kind == "access" else parsed.refresh_token
            check = check_token(token, body["device_id"], body["child_id"], kind, secret)
            if not check.ok or not check.signature_checked:
                problems.append(f"{where}: {kind} token {check.problems}")
    elif reply.status == 422:
        detail = reply.json()["detail"]
        if not (isinstance(detail, list) and detail and all(e["loc"][0] == "body" for e in detail)):
            problems.append(f"{where}: 422 body not FastAPI-shaped: {detail!r}")
        if case == "malformed_bodies":
            field = MALFORMED[i][1]
            if field is not None and not any(field in e["loc"] for e in detail):
                problems.append(f"{where}: 422 does not name {field}: {detail!r}")
    else:  # the deployed app's HTTPException body
        error = reply.json().get("error")
        if not (
            isinstance(error, dict)
            and error.get("code") == f"HTTP_{reply.status}"
            and isinstance(error.get("message"), str)
            and error.get("correlation_id")
        ):
            problems.append(f"{where}: error body is not {{'error': {{code, message, ...}}}}")
    return problems


def _counters(client: Client) -> dict[str, float]:
    text = client.get("/metrics").body.decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total") and not sample.labels:
                out[sample.name] = sample.value
    return out


@pytest.mark.parametrize("flags", COMBOS, ids=[f.key() for f in COMBOS])
@pytest.mark.parametrize("backend", BACKENDS)
def test_contract_cases(backend: str, flags: Flags, request: pytest.FixtureRequest) -> None:
    stores: dict[str, str] = {}
    if backend != "memory":
        stores["redis_url"] = request.getfixturevalue("redis_server").url
        stores["database_url"] = request.getfixturevalue("claim_database")
    world = World.make(f"{flags.key()}-{backend[0]}-{uuid.uuid4().hex[:6]}")
    config = ServerConfig(flags=flags, seed=world.seed(), **stores)  # type: ignore[arg-type]
    cases = build_cases(world)
    mismatches: list[str] = []
    problems: list[str] = []
    got_statuses: list[int] = []
    cached = 0
    with EmbeddedServer(config) as server, Client(server.url) as client:
        for case, bodies in cases.items():
            want = expected(case, flags)
            got = []
            replies = []
            for i, body in enumerate(bodies):
                reply = client.claim(body)
                got.append(reply.status)
                replies.append(reply)
                problems += _check_reply(case, i, body, reply, server.jwt_secret)
            got_statuses += got
            if got != want:
                mismatches.append(f"{case}: expected {want}, got {got}")
            if case in ("identical_retry", "nonce_resent_upper_case") and got == want == [200, 200]:
                cached += 1
                first, second = replies
                if second.body != first.body:
                    problems.append("identical retry: body differs from the first")
                if second.headers.get("x-idempotent-request") != "true":
                    problems.append("identical retry: no X-Idempotent-Request: true")
                if first.headers.get("x-idempotent-request"):
                    problems.append("first claim marked idempotent")
        counters = _counters(client)
    assert not mismatches, f"{flags.describe()} on {backend}:\n" + "\n".join(mismatches)
    assert not problems, "\n".join(problems)
    assert counters["claim_replay_cached_total"] == cached
    assert counters["claim_success_total"] == got_statuses.count(200) - cached
    assert counters["claim_replay_conflict_total"] == got_statuses.count(409)
    assert counters["claim_auto_register_total"] == (2 if flags.enable_auto_register else 0)


def test_expected_table_covers_the_checklist_outcomes() -> None:
    """Sanity of the oracle itself against the checklist's four named outcomes."""
    prod = Flags()
    staging = Flags(enable_idempotency=True, enable_auto_register=True)
    assert expected("first_claim", prod) == [200]
    assert expected("identical_retry", staging) == [200, 200]
    assert expected("identical_retry", prod) == [200, 409]
    assert expected("same_nonce_other_hmac", staging)[1] == 409
    assert expected("mixed_case_id_legacy_signing", prod) == [200]
    assert expected("mixed_case_id_legacy_signing", Flags(normalize_ids_in_hmac=True)) == [401]
