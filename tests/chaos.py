"""Restarts under load: replicas on one PostgreSQL are SIGKILLed one at a time while clients keep asking.

`run_chaos(plan, database_url, log_dir)` starts `plan.replicas` server processes on one database
and runs two things at once:

* the load: `plan.workers` asyncio workers, each owning `plan.threads_per_worker` threads, send
  turns (Ask and StreamAsk in turn) one thread after the other. Every logical turn has a unique
  question and a unique request_id. A call that fails with a status a caller is told to retry
  (`RETRYABLE`) is sent again, with the same request_id, to the next replica after a backoff,
  until a Turn comes back: the turn is then acknowledged. The first turn of a thread is sent
  without a thread_id (the server derives the thread from the request_id).
* the killer: `plan.kills` times, it waits a little, SIGKILLs one replica (each in turn), starts
  it again on the same address and waits until it serves.

When the killer is done, the workers finish the turn they are in and stop. Then, with every
replica up, `ChaosReport` records what the threads hold: each thread's human messages against
its acknowledged questions, its checkpoints' chain, a repeat of every acknowledged request_id
(the same Turn must come back), a new Ask on every thread, and the servers' logs.
`ChaosReport.problems()` lists every broken invariant; empty means the run passed.

Used by tests/e2e/test_restarts_under_load.py (a short run) and bench/chaos.py (`make chaos`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, aclosing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.support import ServerProcess, assert_one_linear_chain, server_env
from threadline_client import AsyncThreadlineClient, ThreadlineClient, ThreadlineError, pb

# The statuses the error contract tells a caller to retry (docs/errors.md), and what a client sees
# of a replica dying under its call: the connection refused or reset (UNAVAILABLE), the call cut
# (CANCELLED), a deadline passed while the thread's hold moved on (DEADLINE_EXCEEDED).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# A restarted replica is reachable again within this rather than gRPC's default backoff (up to 120 s).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
HUNG_UP = "CANCELLED (the client hung up)"
"""The status count of a stream its client left after the first token."""

_LOG_PROBLEMS = ("Traceback", "unexpected error", "INTERNAL")
_CHECKS_AT_ONCE = 8


@dataclass(frozen=True)
class ChaosPlan:
    """What a run does."""

    replicas: int = 3
    """Server processes on the one database."""
    kills: int = 20
    """SIGKILLs, one replica at a time, each followed by a restart."""
    workers: int = 6
    """Client workers sending turns at once."""
    threads_per_worker: int = 2
    """Threads each worker owns; it sends their turns one after the other."""
    kill_gap_s: tuple[float, float] = (0.5, 1.5)
    """Seconds between a restarted replica serving and the next kill: uniform in this range."""
    call_timeout_s: float = 10.0
    """Deadline of each call."""
    cut_every: int = 5
    """Every cut_every-th turn's first call is cut by its client mid-turn, on a live replica: an Ask by a
    deadline shorter than the turn (cut_deadline_s), a StreamAsk by hanging up after its first token.
    Its retry goes to the next replica while the first may still hold the thread. 0: no cuts."""
    cut_deadline_s: float = 0.15
    turn_give_up_s: float = 60.0
    """A turn not acknowledged within this is abandoned (a problem)."""
    token_delay_ms: int = 20
    """THREADLINE_OFFLINE_TOKEN_DELAY_MS of the servers: turns last long enough to be cut by a kill."""
    seed: int = 22


@dataclass
class Acknowledged:
    """A logical turn that got its Turn back, and what it took."""

    thread: str
    request_id: str
    query: str
    turn: pb.Turn
    attempts: int
    """Calls sent for it (1: no retry)."""
    answered_by: str
    """The pid of the replica process that answered."""


@dataclass
class _Thread:
    label: str
    thread_id: str = ""
    turns: list[Acknowledged] = field(default_factory=list)


@dataclass
class ChaosReport:
    """What a run did and what the threads held afterwards."""

    plan: ChaosPlan
    duration_s: float = 0.0
    kills: int = 0
    calls: int = 0
    """Turn calls sent during the load (first tries and retries)."""
    retries: int = 0
    acknowledged: list[Acknowledged] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    """Failed calls before their turn was acknowledged, by status code (and reason, when there is one)."""
    abandoned: list[str] = field(default_factory=list)
    """Turns that got a status not to retry, or none within turn_give_up_s."""
    returned_stored: int = 0
    """Retried turns answered with a turn another process had stored: a kill came after the turn, before its reply."""
    finished_elsewhere: int = 0
    """Retried turns whose checkpoints more than one process wrote: cut by a kill, finished by the retry."""
    check_s: float = 0.0
    """Seconds the checks afterwards took."""
    violations: list[str] = field(default_factory=list)
    """Invariants the threads broke afterwards."""
    log_problems: list[str] = field(default_factory=list)

    @property
    def retried_turns(self) -> int:
        return sum(1 for a in self.acknowledged if a.attempts > 1)

    def problems(self) -> list[str]:
        """Everything that should not have happened; empty when the run passed."""
        problems = [f"abandoned: {a}" for a in self.abandoned] + self.violations + self.log_problems
        if self.kills < self.plan.kills:
            problems.append(f"only {self.kills} of {self.plan.kills} kills happened")
        return problems


def _question(label: str, n: int) -> str:
    """Unique per logical turn; every third one makes the offline model call its calculator (more steps)."""
    return f"{label} turn {n}: what is {n}+{len(label)}?" if n % 3 == 2 else f"{label} turn {n}, noted?"


class _HungUp(Exception):
    """The client left its stream mid-turn on purpose."""


class _Load:
    def __init__(self, plan: ChaosPlan, replicas: list[ServerProcess], report: ChaosReport):
        self.plan = plan
        self.replicas = replicas
        self.report = report
        self.stopping = asyncio.Event()
        self.random = random.Random(plan.seed)
        self.threads: list[list[_Thread]] = [
            [_Thread(f"w{w} t{t}") for t in range(plan.threads_per_worker)] for w in range(plan.workers)
        ]

    async def kill_one_at_a_time(self) -> None:
        try:
            for k in range(self.plan.kills):
                await asyncio.sleep(self.random.uniform(*self.plan.kill_gap_s))
                replica = self.replicas[k % len(self.replicas)]
                await asyncio.to_thread(replica.kill)
                self.report.kills += 1
                await asyncio.to_thread(replica.start)
        finally:
            self.stopping.set()

    async def worker(self, index: int) -> None:
        clients = [AsyncThreadlineClient(r.address, channel_options=_CHANNEL_OPTIONS) for r in self.replicas]
        try:
            n = 0
            while not self.stopping.is_set():
                for thread in self.threads[index]:
                    if not await self._turn(clients, thread, n, streaming=(n + index) % 2 == 1):
                        return
                n += 1
        finally:
            for client in clients:
                await client.close()

    async def _turn(self, clients: list[AsyncThreadlineClient], thread: _Thread, n: int, streaming: bool) -> bool:
        """Sends one logical turn until it is acknowledged; False when it was abandoned."""
        query, request_id = _question(thread.label, n), f"{thread.label.replace(' ', '-')}-r{n}"
        replica = self.random.randrange(len(clients))
        give_up_at = time.monotonic() + self.plan.turn_give_up_s
        for attempt in range(1, 1_000_000):
            self.report.calls += 1
            self.report.retries += attempt > 1
            process = self.replicas[replica].process
            pid = str(process.pid) if process is not None else "?"
            cut = attempt == 1 and self.plan.cut_every > 0 and n % self.plan.cut_every == self.plan.cut_every - 1
            try:
                turn = await self._call(clients[replica], thread.thread_id, query, request_id, streaming, cut)
            except _HungUp:
                self.report.statuses[HUNG_UP] += 1
                replica = (replica + 1) % len(clients)
                continue
            except ThreadlineError as error:
                self.report.statuses[f"{error.code.name} {error.reason}".strip()] += 1
                if error.code not in RETRYABLE or time.monotonic() > give_up_at:
                    self.report.abandoned.append(f"{thread.label} {request_id} after {attempt} calls: {error}")
                    return False
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt) * self.random.uniform(0.5, 1.0))
                replica = (replica + 1) % len(clients)
                continue
            thread.thread_id = thread.thread_id or turn.thread_id
            acknowledged = Acknowledged(thread.thread_id, request_id, query, turn, attempt, answered_by=pid)
            thread.turns.append(acknowledged)
            self.report.acknowledged.append(acknowledged)
            return True
        raise AssertionError("unreachable")

    async def _call(
        self, client: AsyncThreadlineClient, thread_id: str, query: str, request_id: str, streaming: bool, cut: bool
    ) -> pb.Turn:
        """One call of the turn; cut: leave it mid-turn (a short deadline, or hanging up after a token)."""
        if not streaming:
            timeout = self.plan.cut_deadline_s if cut else self.plan.call_timeout_s
            return await client.ask(query, thread_id=thread_id, request_id=request_id, timeout=timeout)
        finals = []
        events = client.stream_ask(query, thread_id=thread_id, request_id=request_id, timeout=self.plan.call_timeout_s)
        async with aclosing(events):
            async for event in events:
                if event.HasField("final"):
                    finals.append(event.final)
                elif cut:
                    raise _HungUp
        assert len(finals) == 1, f"{request_id}: a stream ended with {len(finals)} final events"
        return finals[0]

    async def run(self) -> None:
        workers = [asyncio.create_task(self.worker(i)) for i in range(self.plan.workers)]
        await self.kill_one_at_a_time()
        await asyncio.gather(*workers)


@dataclass
class _Findings:
    """What the checks of one thread found."""

    violations: list[str] = field(default_factory=list)
    returned_stored: int = 0
    finished_elsewhere: int = 0


def _check_threads(report: ChaosReport, threads: list[_Thread], replicas: list[ServerProcess]) -> None:
    """The invariants, checked with every replica serving (a few threads at once)."""
    clients = [ThreadlineClient(r.address) for r in replicas]
    try:
        with ThreadPoolExecutor(_CHECKS_AT_ONCE) as pool:
            checked = pool.map(lambda it: _check_thread(clients, *it), enumerate(threads))
            for findings in checked:
                report.violations += findings.violations
                report.returned_stored += findings.returned_stored
                report.finished_elsewhere += findings.finished_elsewhere
    finally:
        for client in clients:
            client.close()


def _answers_per_question(messages: Sequence[pb.Message]) -> list[int]:
    """For each human message, how many final answers (AI messages asking for no tool) follow it before the next."""
    counts: list[int] = []
    for message in messages:
        if message.role == pb.ROLE_HUMAN:
            counts.append(0)
        elif counts and message.role == pb.ROLE_AI and not message.tool_calls:
            counts[-1] += 1
    return counts


def _check_thread(clients: list[ThreadlineClient], index: int, thread: _Thread) -> _Findings:
    """One thread's invariants, read through one replica, repeated and continued through the others."""
    findings = _Findings()
    if not thread.thread_id:
        return findings
    client = clients[index % len(clients)]
    history = client.history(thread.thread_id, message_limit=1000)
    humans = [m.text for m in history.messages if m.role == pb.ROLE_HUMAN]
    expected = [t.query for t in thread.turns]
    if humans != expected:
        duplicated = [q for q, count in Counter(humans).items() if count > 1]
        missing = [q for q in expected if q not in humans]
        extra = [q for q in humans if q not in expected]
        findings.violations.append(
            f"{thread.label}: questions differ from the acknowledged ones "
            f"(duplicated {duplicated}, missing {missing}, unacknowledged {extra})"
        )
    answers = _answers_per_question(history.messages)
    if any(count != 1 for count in answers):
        findings.violations.append(f"{thread.label}: final answers per question {answers}, each should be 1")
    try:
        assert_one_linear_chain(client, thread.thread_id)
    except AssertionError as error:
        findings.violations.append(f"forked: {error}")
    checkpoints = list(client.iter_checkpoints(thread.thread_id, page_size=100))
    writer = {c.checkpoint_id: c.replica.rpartition(":")[2] for c in checkpoints}
    writers: dict[str, set[str]] = {}
    for checkpoint in checkpoints:
        writers.setdefault(checkpoint.request_id, set()).add(writer[checkpoint.checkpoint_id])
    for turn in thread.turns:
        if turn.turn.checkpoint_id not in writer:
            findings.violations.append(f"{turn.request_id}: its acknowledged checkpoint is not in the thread")
        elif turn.attempts > 1 and writer[turn.turn.checkpoint_id] != turn.answered_by:
            findings.returned_stored += 1
        elif len(writers.get(turn.request_id, ())) > 1:
            findings.finished_elsewhere += 1
    repeating = clients[(index + 1) % len(clients)]
    for turn in thread.turns:  # same request_id, same Turn, from any replica
        again = repeating.ask(turn.query, thread_id=thread.thread_id, request_id=turn.request_id, timeout=30)
        if again != turn.turn:
            findings.violations.append(f"{turn.request_id}: a repeat returned another turn than the acknowledged one")
    query = f"{thread.label} after the restarts: still here?"
    answer = clients[(index + 2) % len(clients)].ask(query, thread_id=thread.thread_id, timeout=30).answer
    if query not in answer:
        findings.violations.append(f"{thread.label}: the Ask after the restarts answered {answer!r}")
    return findings


def _check_logs(report: ChaosReport, replicas: list[ServerProcess]) -> None:
    for replica in replicas:
        for line in replica.log().splitlines():
            if any(marker in line for marker in _LOG_PROBLEMS):
                report.log_problems.append(f"{replica.address}: {line}")


@contextmanager
def _replicas(plan: ChaosPlan, database_url: str, log_dir: Path) -> Iterator[list[ServerProcess]]:
    """The replicas, serving: the first starts alone (it creates the schema), the others together."""
    env = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS=str(plan.token_delay_ms), THREADLINE_LOG_LEVEL="WARNING")
    replicas = [ServerProcess(database_url, log_dir, env=env) for _ in range(plan.replicas)]
    with ExitStack() as stack:
        for replica in replicas:
            stack.callback(replica.stop)
        replicas[0].start()
        with ThreadPoolExecutor(len(replicas)) as pool:
            list(pool.map(ServerProcess.start, replicas[1:]))
        yield replicas


def run_chaos(plan: ChaosPlan, database_url: str, log_dir: Path) -> ChaosReport:
    """Runs the plan against replicas on database_url (their logs in log_dir); see the module docstring."""
    report = ChaosReport(plan)
    with _replicas(plan, database_url, log_dir) as replicas:
        load = _Load(plan, replicas, report)
        started = time.monotonic()
        asyncio.run(load.run())
        report.duration_s = time.monotonic() - started
        _check_threads(report, [t for threads in load.threads for t in threads], replicas)
        _check_logs(report, replicas)
        report.check_s = time.monotonic() - started - report.duration_s
    return report
