"""Restarts under load: replicas SIGKILLed one at a time lose, duplicate and fork no acknowledged turn.

A short run of the driver in tests/chaos.py; bench/chaos.py (`make chaos`) runs the full one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.chaos import ChaosPlan, run_chaos

SHORT = ChaosPlan(replicas=3, kills=3, workers=4, threads_per_worker=2)


def test_every_acknowledged_turn_is_in_its_thread_once_while_replicas_are_killed_and_restarted(
    fresh_postgres_url: str, logs: Path
) -> None:
    report = run_chaos(SHORT, fresh_postgres_url, logs)

    assert report.problems() == []
    assert report.kills == SHORT.kills
    codes: Counter[str] = Counter()  # statuses by code, whatever their reason
    for status, count in report.statuses.items():
        codes[status.split()[0]] += count
    assert codes["UNAVAILABLE"] > 0, "no call met a killed replica"
    assert len(report.acknowledged) >= SHORT.workers * SHORT.threads_per_worker * 2
    # The codes a killed replica and the planned client cuts cause; any other (a busy thread, a lost
    # hold) would mean a replica that stayed up misbehaved, and is worth a look even when retried.
    assert set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}, report.statuses
