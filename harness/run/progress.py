"""Live progress: one line a second, the same in one process and merged over ``--workers``.

Workers write their running counts to a small file every ``PROGRESS_FILE_S``
(atomically, by rename) and the parent sums them; nothing costs anything per claim.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from harness.results import RunResults

PROGRESS_FILE_S = 0.5  # how often a worker writes its running counts


def progress_line(
    elapsed: float,
    sent: int,
    rate: float,
    by_status: Mapping[str, int],
    violations: int,
    late: int,
) -> str:
    """One live progress line; the same format in one process and merged over ``--workers``."""
    statuses = " ".join(f"{k}={v}" for k, v in sorted(by_status.items()))
    return (
        f"[{elapsed:6.1f}s] sent={sent} {rate:,.0f}/s {statuses} "
        f"violations={violations} late={late}"
    )


def write_counts(path: str, results: RunResults) -> None:
    """Write the running counts atomically (a reader never sees half a file)."""
    counts = {
        "sent": results.sent,
        "by_status": dict(results.by_status),
        "violations": sum(t.violations for t in results.checks.values()),
        "late": results.late_starts,
    }
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(counts))
        os.replace(tmp, path)
    except OSError:  # progress is best effort; the results are what count
        pass


async def print_progress(results: RunResults, stream: IO[str], clock: Callable[[], float]) -> None:
    """Every second, until cancelled: the run's progress line."""
    start = clock()
    last_sent, last_t = 0, start
    while True:
        await asyncio.sleep(1.0)
        now = clock()
        r = results
        rate = (r.sent - last_sent) / (now - last_t) if now > last_t else 0.0
        last_sent, last_t = r.sent, now
        violations = sum(t.violations for t in r.checks.values())
        line = progress_line(now - start, r.sent, rate, r.by_status, violations, r.late_starts)
        stream.write(line + "\n")
        stream.flush()


async def keep_writing_counts(path: str, results: RunResults) -> None:
    """Every ``PROGRESS_FILE_S``, until cancelled: this worker's counts, for the parent."""
    while True:
        await asyncio.sleep(PROGRESS_FILE_S)
        write_counts(path, results)


class WorkerProgress(threading.Thread):
    """Once a second, the workers' counts files summed into one progress line."""

    def __init__(self, directory: str, workers: int, stream: IO[str]) -> None:
        super().__init__(name="harness-worker-progress", daemon=True)
        self.files = [Path(directory, f"progress-{i}.json") for i in range(workers)]
        self.stream = stream
        self.done = threading.Event()

    def totals(self) -> tuple[int, Counter[str], int, int]:
        """Summed (sent, by_status, violations, late starts) over the workers seen so far."""
        sent = violations = late = 0
        by_status: Counter[str] = Counter()
        for path in self.files:
            try:
                counts = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # not written yet
                continue
            sent += counts["sent"]
            by_status.update(counts["by_status"])
            violations += counts["violations"]
            late += counts["late"]
        return sent, by_status, violations, late

    def run(self) -> None:
        start = last_t = time.monotonic()
        last_sent = 0
        while not self.done.wait(1.0):
            now = time.monotonic()
            sent, by_status, violations, late = self.totals()
            rate = (sent - last_sent) / (now - last_t) if now > last_t else 0.0
            last_sent, last_t = sent, now
            self.stream.write(progress_line(now - start, sent, rate, by_status, violations, late))
            self.stream.write("\n")
            self.stream.flush()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
