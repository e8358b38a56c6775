"""TLS, mTLS and certificate reloading; open mode's address rule; reflection's modes; secrets kept out
of logs and the database. Real certificates, real handshakes over loopback."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.credentials import AUDIENCE, ISSUER, CertificateAuthority, Issued, Signer, api_key
from tests.support import ROOT, ServerProcess, free_port, server_env
from threadline_client import ThreadlineClient, ThreadlineError

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificateAuthority]:
    folder = tmp_path_factory.mktemp("pki")
    return {name: CertificateAuthority(folder, name) for name in ("server", "other", "clients", "renewed")}


def _tls_credentials(ca: CertificateAuthority) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca.cert_file.read_bytes())


@pytest.fixture(scope="module")
def tls_server(
    pki: dict[str, CertificateAuthority], tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[tuple[ServerProcess, Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    issued = pki["server"].issue("threadline", server=True)
    cert, key = folder / "server.pem", folder / "server.key"
    shutil.copy(issued.cert_file, cert)
    shutil.copy(issued.key_file, key)
    env = server_env(THREADLINE_TLS_CERT_FILE=str(cert), THREADLINE_TLS_KEY_FILE=str(key))
    server = ServerProcess("memory://", logs, env=env, health_credentials=_tls_credentials(pki["server"]))
    with server:
        yield server, cert, key


def _fails(client: ThreadlineClient) -> ThreadlineError:
    with pytest.raises(ThreadlineError) as failed:
        client.list_threads(timeout=5)
    return failed.value


def test_tls_serves_clients_that_trust_its_ca_only(
    tls_server: tuple[ServerProcess, Path, Path], pki: dict[str, CertificateAuthority]
) -> None:
    server, _, _ = tls_server
    with ThreadlineClient(server.address, ca_file=str(pki["server"].cert_file)) as client:
        assert client.ask("Hello over TLS.").answer
    with ThreadlineClient(server.address) as plaintext:
        assert _fails(plaintext).code == grpc.StatusCode.UNAVAILABLE
    with ThreadlineClient(server.address, ca_file=str(pki["other"].cert_file)) as distrusting:
        assert _fails(distrusting).code == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_swapped_on_disk_is_served_to_new_connections(
    tls_server: tuple[ServerProcess, Path, Path], pki: dict[str, CertificateAuthority]
) -> None:
    server, cert, key = tls_server
    renewed_ca = str(pki["renewed"].cert_file)
    with ThreadlineClient(server.address, ca_file=renewed_ca) as early:
        assert _fails(early).code == grpc.StatusCode.UNAVAILABLE
    renewed = pki["renewed"].issue("threadline-renewed", server=True)
    # As a certificate manager does: write aside, then rename over (each file changes atomically).
    for source, target in ((renewed.key_file, key), (renewed.cert_file, cert)):
        shutil.copy(source, target.with_suffix(".new"))
        os.replace(target.with_suffix(".new"), target)
    deadline = time.monotonic() + 10
    while True:
        with ThreadlineClient(server.address, ca_file=renewed_ca) as client:
            try:
                assert client.list_threads(timeout=5) is not None
                break
            except ThreadlineError:
                assert time.monotonic() < deadline, "the renewed certificate is not served"
                time.sleep(0.2)
    with ThreadlineClient(server.address, ca_file=str(pki["server"].cert_file)) as old_trust:
        assert _fails(old_trust).code == grpc.StatusCode.UNAVAILABLE
    assert "TLS certificates reloaded" in server.log()


def test_mtls_requires_a_client_certificate_from_the_client_ca(
    pki: dict[str, CertificateAuthority], tmp_path: Path, logs: Path
) -> None:
    issued = pki["server"].issue("threadline-mtls", server=True)
    env = server_env(
        THREADLINE_TLS_CERT_FILE=str(issued.cert_file),
        THREADLINE_TLS_KEY_FILE=str(issued.key_file),
        THREADLINE_TLS_CLIENT_CA_FILE=str(pki["clients"].cert_file),
    )
    good = pki["clients"].issue("service-a", server=False)
    foreign = pki["other"].issue("intruder", server=False)
    health = grpc.ssl_channel_credentials(
        root_certificates=pki["server"].cert_file.read_bytes(),
        private_key=good.key_file.read_bytes(),
        certificate_chain=good.cert_file.read_bytes(),
    )
    ca = str(pki["server"].cert_file)
    with ServerProcess("memory://", logs, env=env, health_credentials=health) as server:
        with ThreadlineClient(
            server.address, ca_file=ca, cert_file=str(good.cert_file), key_file=str(good.key_file)
        ) as client:
            assert client.ask("Hello over mTLS.").answer
        with ThreadlineClient(server.address, ca_file=ca) as anonymous:
            assert _fails(anonymous).code == grpc.StatusCode.UNAVAILABLE
        with ThreadlineClient(
            server.address, ca_file=ca, cert_file=str(foreign.cert_file), key_file=str(foreign.key_file)
        ) as intruder:
            assert _fails(intruder).code == grpc.StatusCode.UNAVAILABLE


def _serve(address: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`threadline serve` until it has either refused to start or logged that it serves, then stopped."""
    command = [sys.executable, "-m", "threadline", "serve", "--address", address, "--database-url", "memory://"]
    lines = []
    with subprocess.Popen(
        command, env=server_env(**env), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "threadline serving on" in line:
                process.terminate()
        process.wait(timeout=30)
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines))


def test_open_mode_serves_only_loopback_unless_allowed() -> None:
    refused = _serve(f"0.0.0.0:{free_port()}")
    assert refused.returncode == 2, refused.stdout
    assert "refusing to serve" in refused.stdout and "THREADLINE_ALLOW_UNAUTHENTICATED" in refused.stdout
    allowed = _serve(f"0.0.0.0:{free_port()}", THREADLINE_ALLOW_UNAUTHENTICATED="true")
    assert allowed.returncode == 0, allowed.stdout
    assert "WITHOUT AUTHENTICATION" in allowed.stdout
    loopback = _serve(f"127.0.0.1:{free_port()}")
    assert loopback.returncode == 0 and "WITHOUT AUTHENTICATION" not in loopback.stdout


def _grpcurl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-plaintext", *args, address, "list"], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("mode", ["open", "authenticated", "off"])
def test_reflection_modes(mode: str, tmp_path: Path, logs: Path) -> None:
    key = api_key("acme")
    (tmp_path / "keys").write_text(key.line + "\n")
    env = server_env(THREADLINE_API_KEYS_FILE=str(tmp_path / "keys"), THREADLINE_REFLECTION=mode)
    with ServerProcess("memory://", logs, env=env) as server:
        anonymous = _grpcurl(server.address)
        with_key = _grpcurl(server.address, "-H", f"authorization: Bearer {key.key}")
    if mode == "open":
        assert "threadline.v1.ThreadlineService" in anonymous.stdout
    elif mode == "authenticated":
        assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr
        assert "threadline.v1.ThreadlineService" in with_key.stdout
    else:
        assert with_key.returncode != 0 and "does not support the reflection API" in with_key.stderr


def test_no_secret_reaches_the_log_or_the_database(tmp_path: Path, logs: Path) -> None:
    """Every credential a server saw, valid or not, is absent from its whole log and database."""
    signer = Signer(tmp_path)
    key, other = api_key("acme", label="ci"), api_key("acme")
    (tmp_path / "keys").write_text(key.line + "\n")
    tokens = [signer.token(), signer.token(exp=int(time.time()) - 3600), signer.token(aud="x")]
    env = server_env(
        THREADLINE_API_KEYS_FILE=str(tmp_path / "keys"),
        THREADLINE_JWT_JWKS=str(signer.jwks_file),
        THREADLINE_JWT_ISSUER=ISSUER,
        THREADLINE_JWT_AUDIENCE=AUDIENCE,
        THREADLINE_LOG_LEVEL="DEBUG",
    )
    database = tmp_path / "threadline.db"
    with ServerProcess(f"sqlite:///{database}", logs, env=env) as server:
        for token in (key.key, other.key, *tokens, "garbage"):
            with ThreadlineClient(server.address, token=token) as client:
                try:
                    thread = client.ask("Hello.").thread_id
                    client.history(thread)
                except ThreadlineError:
                    pass
        log = server.log()
    with sqlite3.connect(database) as db:
        stored = "\n".join(
            repr(row) for table in ("checkpoints", "writes") for row in db.execute(f"SELECT * FROM {table}")
        )
    assert "caller" in stored  # the audit trail names the key by its label
    secrets = [key.key, other.key, *tokens, key.line.split()[1], other.line.split()[1]]
    for secret in secrets:
        for fragment in {secret, secret[-24:]}:
            assert fragment not in log, "a credential reached the log"
            assert fragment not in stored, "a credential reached the database"


@contextlib.contextmanager
def _https_jwks(signer: Signer, issued: Issued) -> Iterator[tuple[str, list[str]]]:
    """A real HTTPS server of the JWKS on loopback; yields its URL and the paths it was asked for."""
    requests: list[str] = []
    body = signer.jwks_file.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_jwks_is_fetched_from_an_https_url(pki: dict[str, CertificateAuthority], tmp_path: Path, logs: Path) -> None:
    signer = Signer(tmp_path)
    with _https_jwks(signer, pki["server"].issue("idp", server=True)) as (url, requests):
        env = server_env(
            THREADLINE_JWT_JWKS=url,
            THREADLINE_JWT_ISSUER=ISSUER,
            THREADLINE_JWT_AUDIENCE=AUDIENCE,
            SSL_CERT_FILE=str(pki["server"].cert_file),  # the server trusts the identity provider's CA
        )
        with ServerProcess("memory://", logs, env=env) as server:
            with ThreadlineClient(server.address, token=signer.token("ec-1")) as client:
                assert client.ask("Hello.").answer
            with ThreadlineClient(server.address, token=signer.token(header={"kid": "unknown"})) as client:
                assert _fails(client).code == grpc.StatusCode.UNAUTHENTICATED
        assert requests == ["/.well-known/jwks.json"], "fetched more than once in a minute"
    refused = _serve(
        f"127.0.0.1:{free_port()}",
        THREADLINE_JWT_JWKS="http://127.0.0.1:1/jwks.json",
        THREADLINE_JWT_ISSUER=ISSUER,
        THREADLINE_JWT_AUDIENCE=AUDIENCE,
    )
    assert refused.returncode == 2 and "must be a file path or an https:// URL" in refused.stdout


def test_the_health_command_checks_a_tls_server(
    tls_server: tuple[ServerProcess, Path, Path], pki: dict[str, CertificateAuthority]
) -> None:
    server, _, _ = tls_server

    def health(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "threadline", "health", "--address", server.address, *args]
        return subprocess.run(command, capture_output=True, text=True, env=server_env(), check=False, timeout=30)

    assert health().returncode == 1, "a plaintext health check passed against a TLS server"
    current_ca = pki["renewed" if "TLS certificates reloaded" in server.log() else "server"]  # after the swap test
    trusted = health("--ca-file", str(current_ca.cert_file), "--timeout", "5")
    assert trusted.returncode == 0 and trusted.stdout.strip() == "SERVING", trusted.stderr
