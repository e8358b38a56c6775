"""Restarts under load: three replicas on one PostgreSQL, one at a time SIGKILLed and restarted, 20 times.

The driver is tests/chaos.py (tests/e2e/test_restarts_under_load.py runs a short version of it):
client workers send Ask and StreamAsk turns with request_ids and retry a failed call with the
same request_id on another replica until it is acknowledged. Afterwards every thread must hold
its acknowledged questions exactly once and in order, on one linear chain of checkpoints; every
acknowledged request_id must return the same Turn again; every thread must answer a new Ask; and
no server log may hold a traceback or an INTERNAL error. Prints what the run did, by status code,
and exits 1 when an invariant broke.

Run alone: .venv/bin/python bench/chaos.py   (BENCH_CHAOS_KILLS, BENCH_CHAOS_WORKERS to change the effort)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from harness import Row, print_table, scratch_database, verdict

from tests.chaos import ChaosPlan, run_chaos

PLAN = ChaosPlan(
    kills=int(os.environ.get("BENCH_CHAOS_KILLS", "20")),
    workers=int(os.environ.get("BENCH_CHAOS_WORKERS", "6")),
)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        report = run_chaos(PLAN, url, Path(tmp))
    threads = PLAN.workers * PLAN.threads_per_worker
    rows = [
        Row("replicas SIGKILLed and restarted", report.kills, "", decimals=0),
        Row("turn calls (Ask and StreamAsk)", report.calls, "", f"{PLAN.workers} workers, {threads} threads", 0),
        Row("retries (same request_id, next replica)", report.retries, "", decimals=0),
        Row("acknowledged turns", len(report.acknowledged), "", decimals=0),
        Row("  of them retried", report.retried_turns, "", decimals=0),
        Row("  cut mid-turn, finished by the retry", report.finished_elsewhere, "", decimals=0),
        Row("  stored before the cut, returned to the retry", report.returned_stored, "", decimals=0),
        *(Row(f"failed calls: {status}", n, "", decimals=0) for status, n in sorted(report.statuses.items())),
        Row("abandoned turns", len(report.abandoned), "", decimals=0),
        Row("seconds under load", report.duration_s, "s", f"checks afterwards {report.check_s:.1f} s"),
    ]
    print_table(f"Restarts under load: {PLAN.replicas} replicas, PostgreSQL, offline model", rows)
    threads_ok = not report.violations
    print(verdict(f"{PLAN.kills} kills done", report.kills == PLAN.kills, f"{report.kills}"))
    print(verdict("every turn acknowledged", not report.abandoned, f"{len(report.abandoned)} abandoned"))
    print(verdict("threads: each acknowledged turn once, no fork, same Turn again, new Ask answered", threads_ok, ""))
    print(verdict("no traceback or INTERNAL in the server logs", not report.log_problems, ""))
    for problem in report.problems():
        print(f"    {problem}")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
