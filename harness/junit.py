"""JUnit XML from a run report: one testcase per check and per threshold, for CI dashboards.

CI systems (GitLab, Jenkins, GitHub test reporters) show a failed testcase with
its message, so a failed check carries its (already masked) examples as the
failure text. Everything written is passed through ``scrub`` once more: a JUnit
file ends up in CI artefacts that many people can read.
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.masking import scrub
from harness.report import write_atomic

SUITE_CHECKS = "harness.checks"
SUITE_THRESHOLDS = "harness.thresholds"
SUITE_BOARDS = "harness.boards"


def _text(value: object) -> str:
    return scrub(str(value))


def _examples_text(examples: Sequence[Any]) -> str:
    lines = []
    for ex in examples:
        if isinstance(ex, Mapping):
            lines.append(json.dumps(ex, sort_keys=True, default=str))
        else:
            lines.append(str(ex))
    return _text("\n".join(lines))


def _check_case(check: Mapping[str, Any]) -> ET.Element:
    # Checks run side by side over the whole run: the time belongs to the suite, not to each.
    name = str(check.get("name", "unnamed"))
    case = ET.Element("testcase", classname=SUITE_CHECKS, name=_text(name), time="0.000")
    evaluated = check.get("evaluated")
    violations = int(check.get("violations", 0) or 0)
    if not check.get("passed", violations == 0):
        evaluated_txt = f" of {evaluated}" if evaluated is not None else ""
        fail = ET.SubElement(
            case,
            "failure",
            message=_text(f"{name}: {violations} violation(s){evaluated_txt}"),
            type="CheckViolation",
        )
        fail.text = _examples_text(check.get("examples", []))
    elif evaluated == 0:
        ET.SubElement(case, "skipped", message="not exercised in this run (evaluated 0 times)")
    elif evaluated is not None:
        ET.SubElement(case, "system-out").text = f"evaluated {evaluated} times, no violation"
    return case


def _threshold_case(th: Mapping[str, Any]) -> ET.Element:
    name = str(th.get("name") or th.get("expr") or "threshold")
    case = ET.Element("testcase", classname=SUITE_THRESHOLDS, name=_text(name), time="0.000")
    observed = th.get("observed")
    seen = "nothing to measure" if observed is None else f"observed {observed:.6g}"
    note = th.get("note") or ""
    detail = f"{seen}{'; ' + note if note else ''}"
    if th.get("passed"):
        ET.SubElement(case, "system-out").text = _text(detail)
    else:
        fail = ET.SubElement(
            case, "failure", message=_text(f"{name}: {detail}"), type="ThresholdMissed"
        )
        fail.text = _text(detail)
    return case


def _suite(
    name: str, cases: list[ET.Element], props: Mapping[str, Any], duration: float = 0.0
) -> ET.Element:
    failures = sum(1 for c in cases if c.find("failure") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{duration:.3f}",
    )
    if props:
        pe = ET.SubElement(suite, "properties")
        for key, value in props.items():
            ET.SubElement(pe, "property", name=str(key), value=_text(value))
    suite.extend(cases)
    return suite


def _board_case(row: Mapping[str, Any]) -> ET.Element:
    """A bench's board: a failed testcase with its reason when it failed to come up or
    dropped out, so CI shows *which* board broke, not only that the run failed."""
    case = ET.Element("testcase", classname=SUITE_BOARDS, name=str(row["name"]), time="0.000")
    if row["ok"]:
        counters = ", ".join(
            f"{k}={row.get(k)}" for k in ("fw", "hmac_mode", "reconnects", "bad_frames")
        )
        ET.SubElement(case, "system-out").text = scrub(counters)
    else:
        fail = ET.SubElement(case, "failure", type="BoardFailed")
        fail.set("message", scrub(f"{row['name']}: {row['error']}"))
        fail.text = scrub(str(row["error"]))
    return case


def _properties(report: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key in ("run_id", "fleet", "target"):
        if report.get(key) is not None:
            props[key] = report[key]
    flags = report.get("flags")
    if isinstance(flags, Mapping):
        props["flags"] = ",".join(f"{k}={v}" for k, v in sorted(flags.items()))
    claims = report.get("claims")
    if isinstance(claims, Mapping) and "sent" in claims:
        props["claims.sent"] = claims["sent"]
    return props


def build_junit(report: Mapping[str, Any]) -> ET.ElementTree:
    """The XML tree for a report dict (``checks`` list and optional ``thresholds`` list)."""
    checks = report.get("checks", [])
    if not isinstance(checks, list):
        raise HarnessInputError("report.checks", "must be a list of check results")
    thresholds = [
        t.to_dict() if hasattr(t, "to_dict") else t for t in (report.get("thresholds") or [])
    ]
    duration = float(report.get("duration_s", 0.0) or 0.0)
    props = _properties(report)
    root = ET.Element("testsuites", name="harness")
    suites = [_suite(SUITE_CHECKS, [_check_case(c) for c in checks], props, duration)]
    if thresholds:
        suites.append(_suite(SUITE_THRESHOLDS, [_threshold_case(t) for t in thresholds], {}))
    if report.get("boards"):
        suites.append(_suite(SUITE_BOARDS, [_board_case(b) for b in report["boards"]], {}))
    root.extend(suites)
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in suites)))
    root.set("time", f"{duration:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report as JUnit XML (atomically: a CI collector never sees half a file)."""
    return write_tree(build_junit(report), path)


def write_tree(tree: ET.ElementTree, path: str | os.PathLike[str]) -> Path:
    """Write a JUnit tree atomically; a path that cannot be written is a ``--junit`` error."""
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    return write_atomic("--junit", path, buf.getvalue())
