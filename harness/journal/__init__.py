"""The claim journal (``harness soak --journal FILE``): a run's claims as JSON lines, as they
happen, so that a run killed before its report (OOM, SIGKILL, a lost CI runner) can still
be reported on: ``harness report from-journal FILE`` replays the lines.

One file per run, append-only, one JSON object per line:

- ``{"kind": "start", ...}``: the first line, the run's identity (run ID, fleet, seed,
  profile, flags, target or ``"embedded"``, devices, workers, options, thresholds, harness
  version, start time) and its description (``run``, as the report carries it);
- ``{"kind": "claim", "worker", "t_ms", "scenario", "status", "latency_us", "sched_us"}``:
  one per claim sent, whatever came back (``t_ms``: milliseconds since that worker's run
  started; latencies in whole microseconds, exactly what the HDR histograms record, so
  the rebuilt histograms are the run's own);
- ``{"kind": "violation", "worker", "t_ms", "check"}`` (and ``example``, masked, when the
  judge hands one over): one per check violated;
- ``{"kind": "finish", "worker", "t_ms", "finished_at", "results"}``: the last line, the
  final ``RunResults.to_dict()``, written only when the run ends normally.

Cost: ``on_claim`` appends a tuple and nothing else; the lines are formatted and written
in one ``os.write`` per ~100 ms (a timer on the run's loop, or sooner when
``MAX_ROWS`` wait), and at the end. With ``--workers N`` every worker appends to the
same file, opened ``O_APPEND``: on a local Linux file system each ``write`` to a regular
file holds the inode lock for its whole length, so whole-line writes from several
processes never interleave (not so on NFS). A line the kernel did not finish (the
process killed mid-write) is skipped by the reader and counted in the report's note.

Nothing secret is written: scenario labels and status keys are the harness's own words,
examples are masked by the judge and scrubbed again here, URLs lose their user info.
"""

from __future__ import annotations

from harness.journal.replay import JournalRun, read_journal, rebuild, report_from_journal
from harness.journal.writer import ClaimJournal, journal_for, safe_url, start_header

__all__ = [
    "ClaimJournal",
    "JournalRun",
    "journal_for",
    "read_journal",
    "rebuild",
    "report_from_journal",
    "safe_url",
    "start_header",
]
