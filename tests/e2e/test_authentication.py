"""Authentication and authorization over loopback gRPC: API keys (from a file edited while the server
runs) and JWT access tokens (signed with real RS256, ES256 and EdDSA keys), against every RPC."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.credentials import AUDIENCE, ISSUER, Key, Signer, api_key, hs256_with_public_key, unsigned_token
from tests.support import ServerProcess, server_env, wait_until
from threadline_client import ThreadlineClient, ThreadlineError, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

CALL_TIMEOUT_S = 10


def _requests(thread_id: str) -> dict[str, Callable[[ThreadlineServiceStub], Any]]:
    """One call of every ThreadlineService RPC on thread_id (streams read to the end)."""
    checkpoint = str(uuid.uuid4())
    approve = pb.ResumeDecision(approve=pb.Approval())
    return {
        "Ask": lambda stub: stub.Ask(pb.AskRequest(thread_id=thread_id, query="hi")),
        "StreamAsk": lambda stub: list(stub.StreamAsk(pb.StreamAskRequest(thread_id=thread_id, query="hi"))),
        "History": lambda stub: stub.History(pb.HistoryRequest(thread_id=thread_id)),
        "Rewind": lambda stub: stub.Rewind(pb.RewindRequest(thread_id=thread_id, checkpoint_id=checkpoint)),
        "DeleteThread": lambda stub: stub.DeleteThread(pb.DeleteThreadRequest(thread_id=thread_id)),
        "GetState": lambda stub: stub.GetState(pb.GetStateRequest(thread_id=thread_id)),
        "ListThreads": lambda stub: stub.ListThreads(pb.ListThreadsRequest()),
        "ListMessages": lambda stub: stub.ListMessages(pb.ListMessagesRequest(thread_id=thread_id)),
        "Resume": lambda stub: stub.Resume(pb.ResumeRequest(thread_id=thread_id, interrupt_id="i", decision=approve)),
        "StreamResume": lambda stub: list(
            stub.StreamResume(pb.StreamResumeRequest(thread_id=thread_id, interrupt_id="i", decision=approve))
        ),
    }


RPCS = tuple(_requests("t"))


@dataclass
class Credentials:
    folder: Path
    signer: Signer
    acme: Key
    acme_reader: Key
    acme_writer: Key
    globex: Key
    revoked: Key
    keys_file: Path

    def write_keys(self, *keys: Key, extra: str = "") -> None:
        lines = ["# tenant sha256 scopes label", *(key.line for key in keys), extra]
        self.keys_file.write_text("\n".join(lines) + "\n")

    @property
    def all_keys(self) -> tuple[Key, ...]:
        return (self.acme, self.acme_reader, self.acme_writer, self.globex, self.revoked)


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    folder = tmp_path_factory.mktemp("auth")
    made = Credentials(
        folder=folder,
        signer=Signer(folder),
        acme=api_key("acme", label="ci"),
        acme_reader=api_key("acme", "read", "dashboard"),
        acme_writer=api_key("acme", "write"),
        globex=api_key("globex", label="globex bot"),
        revoked=api_key("acme", label="old laptop"),
        keys_file=folder / "keys",
    )
    made.write_keys(*made.all_keys)
    return made


def auth_env(creds: Credentials, **overrides: str) -> dict[str, str]:
    return server_env(
        THREADLINE_API_KEYS_FILE=str(creds.keys_file),
        THREADLINE_JWT_JWKS=str(creds.signer.jwks_file),
        THREADLINE_JWT_ISSUER=ISSUER,
        THREADLINE_JWT_AUDIENCE=AUDIENCE,
        **overrides,
    )


@pytest.fixture(scope="module")
def auth_server(creds: Credentials, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth-db') / 'threadline.db'}"
    with ServerProcess(url, logs, env=auth_env(creds)) as process:
        yield process


@pytest.fixture(scope="module")
def stub(auth_server: ServerProcess) -> Iterator[ThreadlineServiceStub]:
    with grpc.insecure_channel(auth_server.address) as channel:
        yield ThreadlineServiceStub(channel)


def _call(stub: ThreadlineServiceStub, rpc: str, thread_id: str, authorization: str | None) -> grpc.RpcError | None:
    """Makes the RPC with this authorization metadata (None: none); the error it raised, or None."""
    metadata = () if authorization is None else (("authorization", authorization),)

    class WithMetadata:
        def __getattr__(self, name: str) -> Callable[..., Any]:
            method = getattr(stub, name)
            return lambda request: method(request, metadata=metadata, timeout=CALL_TIMEOUT_S)

    try:
        _requests(thread_id)[rpc](WithMetadata())  # type: ignore[arg-type]
    except grpc.RpcError as error:
        return error
    return None


def _reason(error: grpc.RpcError) -> str:
    from threadline_client._errors import error_from_rpc_error

    return error_from_rpc_error(error).reason


def _bad_credentials(creds: Credentials) -> dict[str, tuple[str | None, str]]:
    """Credential cases and the reason each gets."""
    signer = creds.signer
    now = int(time.time())
    return {
        "no header": (None, "UNAUTHENTICATED"),
        "empty bearer": ("Bearer ", "UNAUTHENTICATED"),
        "not bearer": (f"Basic {creds.acme.key}", "UNAUTHENTICATED"),
        "unknown key": (f"Bearer {api_key('acme').key}", "UNAUTHENTICATED"),
        "expired JWT": (f"Bearer {signer.token(exp=now - 3600)}", "TOKEN_EXPIRED"),
        "JWT not yet valid": (f"Bearer {signer.token(nbf=now + 3600)}", "UNAUTHENTICATED"),
        "wrong issuer": (f"Bearer {signer.token(iss='https://evil.example')}", "UNAUTHENTICATED"),
        "wrong audience": (f"Bearer {signer.token(aud='another-service')}", "UNAUTHENTICATED"),
        "unknown kid": (f"Bearer {signer.token(header={'kid': 'rotated-away'})}", "UNAUTHENTICATED"),
        "alg none": (
            f"Bearer {unsigned_token(iss=ISSUER, aud=AUDIENCE, exp=now + 300, tenant='acme')}",
            "UNAUTHENTICATED",
        ),
        "HS256 with the RSA public key": (
            "Bearer "
            + hs256_with_public_key(
                signer.public_pem("rsa-1"), "rsa-1", iss=ISSUER, aud=AUDIENCE, exp=now + 300, tenant="acme"
            ),
            "UNAUTHENTICATED",
        ),
        "no tenant claim": (f"Bearer {signer.token(tenant=None)}", "UNAUTHENTICATED"),
        "tenant claim not a tenant id": (f"Bearer {signer.token(tenant='acme/other')}", "UNAUTHENTICATED"),
        "no exp": (f"Bearer {signer.token(exp=None)}", "UNAUTHENTICATED"),
        "tampered signature": (f"Bearer {signer.token()[:-4]}AAAA", "UNAUTHENTICATED"),
    }


def test_every_rpc_refuses_calls_without_valid_credentials(
    creds: Credentials, stub: ThreadlineServiceStub, auth_server: ServerProcess
) -> None:
    assert set(RPCS) == set(pb.DESCRIPTOR.services_by_name["ThreadlineService"].methods_by_name), "every RPC"
    matrix: dict[tuple[str, str], tuple[str, str]] = {}
    messages = set()
    for case, (authorization, reason) in _bad_credentials(creds).items():
        for rpc in RPCS:
            error = _call(stub, rpc, f"unauth-{uuid.uuid4().hex[:8]}", authorization)
            assert error is not None, f"{case}: {rpc} succeeded"
            matrix[(case, rpc)] = (error.code().name, _reason(error))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, f"{case}: {rpc} got {error.code()}"
            assert _reason(error) == reason, f"{case}: {rpc}"
            messages.add(error.details())
    # Three messages in all (missing, invalid, expired): none names a tenant, a key or a claim.
    assert messages == {
        "no credentials: send the metadata `authorization: Bearer <token>`",
        "the credentials are not valid",
        "the token has expired",
    }
    # Refused before any work: none of the calls created a thread.
    with ThreadlineClient(auth_server.address, token=creds.acme.key) as client:
        assert not [thread for thread in client.list_threads().threads if thread.thread_id.startswith("unauth-")]


def test_valid_credentials_of_each_kind_reach_the_tenant(creds: Credentials, auth_server: ServerProcess) -> None:
    thread = f"kinds-{uuid.uuid4().hex[:8]}"
    signer = creds.signer
    tokens = [creds.acme.key, signer.token("rsa-1"), signer.token("ec-1"), signer.token("ed-1")]
    for number, token in enumerate(tokens):
        with ThreadlineClient(auth_server.address, token=token) as client:
            turn = client.ask(f"Turn {number}.", thread_id=thread)
            assert f"held {2 * number} earlier messages" in turn.answer
    # A JWT whose tenant is globex reaches globex's thread of that name: another thread.
    with ThreadlineClient(auth_server.address, token=signer.token(tenant="globex")) as client:
        assert "held 0 earlier messages" in client.ask("Hello.", thread_id=thread).answer


def test_a_revoked_key_stops_working_without_a_restart(
    creds: Credentials, stub: ThreadlineServiceStub, auth_server: ServerProcess
) -> None:
    bearer = f"Bearer {creds.revoked.key}"
    assert _call(stub, "ListThreads", "t", bearer) is None
    creds.write_keys(*(key for key in creds.all_keys if key is not creds.revoked))
    wait_until(lambda: _call(stub, "ListThreads", "t", bearer) is not None, 10, "the revoked key still works")
    for rpc in RPCS:
        error = _call(stub, rpc, f"revoked-{uuid.uuid4().hex[:8]}", bearer)
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
        assert error.details() == "the credentials are not valid"

    # A malformed edit keeps the keys in force, and the log says why (without the line's content).
    creds.write_keys(*creds.all_keys, extra="globex not-a-hash")
    wait_until(lambda: "API keys not reloaded" in auth_server.log(), 10, "the bad edit was not reported")
    assert _call(stub, "ListThreads", "t", bearer) is not None, "a bad edit brought a revoked key back"
    assert _call(stub, "ListThreads", "t", f"Bearer {creds.acme.key}") is None

    # SIGHUP reloads at once: the repaired file brings the key back.
    creds.write_keys(*creds.all_keys)
    auth_server.signal(signal.SIGHUP)
    wait_until(lambda: _call(stub, "ListThreads", "t", bearer) is None, 10, "the restored key does not work")


SCOPED_CASES = {
    # key or token -> the RPCs it may call (the rest: PERMISSION_DENIED MISSING_SCOPE)
    "read key": ("acme_reader", {"History", "GetState", "ListThreads", "ListMessages"}),
    "write key": ("acme_writer", {"Ask", "StreamAsk", "Resume", "StreamResume", "Rewind"}),
    "JWT threadline:read": ("jwt_read", {"History", "GetState", "ListThreads", "ListMessages"}),
    "JWT threadline:delete": ("jwt_delete", {"DeleteThread"}),
    "JWT with foreign scopes only": ("jwt_foreign", set()),
}


def test_scopes_decide_which_rpcs_a_caller_may_make(creds: Credentials, stub: ThreadlineServiceStub) -> None:
    tokens = {
        "acme_reader": creds.acme_reader.key,
        "acme_writer": creds.acme_writer.key,
        "jwt_read": creds.signer.token(scope="openid threadline:read"),
        "jwt_delete": creds.signer.token(scope="threadline:delete"),
        "jwt_foreign": creds.signer.token(scope="openid profile"),
    }
    needed = {"History": "read", "GetState": "read", "ListThreads": "read", "ListMessages": "read"}
    needed["DeleteThread"] = "delete"
    for case, (token, allowed) in SCOPED_CASES.items():
        for rpc in RPCS:
            error = _call(stub, rpc, f"scoped-{uuid.uuid4().hex[:8]}", f"Bearer {tokens[token]}")
            if rpc in allowed:
                # Allowed through: whatever the engine says of an unknown thread, not a refusal.
                assert error is None or error.code() not in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ), f"{case}: {rpc}"
                continue
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED, f"{case}: {rpc}"
            scope = needed.get(rpc, "write")
            assert _reason(error) == "MISSING_SCOPE"
            assert error.details() == f"the credentials lack the scope {scope!r} this call needs"


def test_health_needs_no_credentials(auth_server: ServerProcess) -> None:
    from grpc_health.v1 import health_pb2

    from tests.support import health_status

    assert health_status(auth_server.address) == health_pb2.HealthCheckResponse.SERVING


def test_keys_new_prints_a_key_the_server_accepts(
    creds: Credentials, auth_server: ServerProcess, tmp_path: Path
) -> None:
    import subprocess
    import sys

    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "threadline",
            "keys",
            "new",
            "--tenant",
            "initech",
            "--scopes",
            "read",
            "--label",
            "ops",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    key = made[0].rsplit(" ", 1)[1]
    line = made[-1]
    assert key.startswith("tl_") and len(key) >= 46 and key not in line
    assert line.split()[0] == "initech" and line.split()[2:] == ["read", "ops"]
    creds.write_keys(*creds.all_keys, extra=line)
    with ThreadlineClient(auth_server.address, token=key) as client:
        wait_until(lambda: _lists(client), 10, "the new key was not picked up")
        with pytest.raises(ThreadlineError) as denied:
            client.ask("hi")
        assert denied.value.reason == "MISSING_SCOPE"


def _lists(client: ThreadlineClient) -> bool:
    try:
        client.list_threads()
    except ThreadlineError:
        return False
    return True


def test_the_cli_sends_its_token(creds: Credentials, auth_server: ServerProcess) -> None:
    import subprocess
    import sys

    from tests.support import server_env

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "threadline", "threads", "--address", auth_server.address, *args]
        return subprocess.run(command, capture_output=True, text=True, env=server_env(**env), check=False)

    assert cli("--token", creds.acme.key).returncode == 0
    assert cli(THREADLINE_TOKEN=creds.acme.key).returncode == 0
    refused = cli()
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    assert creds.acme.key not in cli("--token", creds.acme.key + "x").stderr
