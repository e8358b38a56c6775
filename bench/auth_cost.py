"""What authentication and TLS cost: Ask throughput at c=32 with no auth, API-key auth, and JWT auth over TLS.

Three servers on one scratch PostgreSQL database, the same default agent and offline model
(tool turns, as in ask_throughput.py), measured in turns run by run so the three medians come
from the same minutes. Target (issue: tenants, authentication and TLS): each secured variant
reaches at least 0.9x the turns/s of no auth.

Run alone: .venv/bin/python bench/auth_cost.py   (BENCH_RUNS, BENCH_SECONDS to change effort)
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import RUNS, SECONDS, Row, print_table, run_on_loop, scratch_database, server, turns_per_second, verdict

from tests.credentials import AUDIENCE, ISSUER, CertificateAuthority, Signer, api_key
from tests.support import ServerProcess
from threadline_client import AsyncThreadlineClient

QUERY = "What is 2+3?"
CONCURRENCY = 32
TURNS_PER_THREAD = 10
TARGET_RATIO = 0.9
POOL = {"THREADLINE_DB_POOL_MIN_SIZE": "16", "THREADLINE_DB_POOL_MAX_SIZE": "34"}


@dataclass
class Variant:
    name: str
    server: ServerProcess
    token: str | None = None
    ca_file: str | None = None


@contextmanager
def variants(database_url: str, folder: Path) -> Iterator[list[Variant]]:
    """The three servers and how a client reaches each."""
    key = api_key("bench", label="bench")
    (folder / "keys").write_text(key.line + "\n")
    signer = Signer(folder)
    ca = CertificateAuthority(folder, "bench")
    cert = ca.issue("threadline", server=True)
    jwt_env = {
        "THREADLINE_JWT_JWKS": str(signer.jwks_file),
        "THREADLINE_JWT_ISSUER": ISSUER,
        "THREADLINE_JWT_AUDIENCE": AUDIENCE,
        "THREADLINE_TLS_CERT_FILE": str(cert.cert_file),
        "THREADLINE_TLS_KEY_FILE": str(cert.key_file),
    }
    with ExitStack() as stack:
        plain = stack.enter_context(server(database_url, folder, **POOL))
        keyed = stack.enter_context(server(database_url, folder, THREADLINE_API_KEYS_FILE=str(folder / "keys"), **POOL))
        tls = stack.enter_context(_tls_server(database_url, folder, ca, {**jwt_env, **POOL}))
        yield [
            Variant("no auth, plaintext", plain),
            Variant("API key, plaintext", keyed, token=key.key),
            Variant(
                "JWT (RS256), TLS",
                tls,
                token=signer.token("rsa-1", exp=2**31 - 1, tenant="bench"),
                ca_file=str(ca.cert_file),
            ),
        ]


@contextmanager
def _tls_server(
    database_url: str, folder: Path, ca: CertificateAuthority, env: dict[str, str]
) -> Iterator[ServerProcess]:
    import grpc

    from tests.support import server_env

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_file.read_bytes())
    settings = {"THREADLINE_LOG_LEVEL": "WARNING", **env}
    with ServerProcess(database_url, folder, env=server_env(**settings), health_credentials=credentials) as process:
        yield process


async def measure(variant: Variant) -> float:
    async with AsyncThreadlineClient(variant.server.address, token=variant.token, ca_file=variant.ca_file) as client:
        threads = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(CONCURRENCY)]
        turns = [0] * CONCURRENCY

        async def turn(index: int) -> None:
            turns[index] += 1
            if turns[index] % TURNS_PER_THREAD == 0:
                threads[index] = f"bench-{uuid.uuid4().hex[:8]}"
            await client.ask(QUERY, thread_id=threads[index])

        await turns_per_second(turn, CONCURRENCY, 0.5)  # warm up: connections, TLS session, JWKS, caches
        return await turns_per_second(turn, CONCURRENCY, SECONDS)


def main() -> None:
    with scratch_database() as url, tempfile.TemporaryDirectory() as tmp, variants(url, Path(tmp)) as servers:
        figures: dict[str, list[float]] = {v.name: [] for v in servers}
        for _ in range(RUNS):
            for variant in servers:
                figures[variant.name].append(run_on_loop(measure(variant)))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    base = medians["no auth, plaintext"]
    rows = [Row(name, value, "turns/s", f"{value / base:.2f}x no auth") for name, value in medians.items()]
    print_table(f"Ask c={CONCURRENCY} on PostgreSQL: the cost of authentication and TLS (median of {RUNS})", rows)
    for name, value in medians.items():
        if name != "no auth, plaintext":
            print(verdict(f"{name} >= {TARGET_RATIO}x no auth", value >= TARGET_RATIO * base, f"{value / base:.2f}x"))


if __name__ == "__main__":
    main()
