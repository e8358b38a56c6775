"""The contract works from another language: examples/node (grpc-js) against a real server."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT, ServerProcess

EXAMPLE = ROOT / "examples" / "node"


def test_the_node_client_asks_streams_reads_rewinds_and_reads_error_info(sqlite_server: ServerProcess) -> None:
    node = shutil.which("node")
    if node is None or not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("the Node example needs node and its packages: `make node-example` (`make test` runs it)")
    ran = subprocess.run(
        [node, str(EXAMPLE / "client.js"), sqlite_server.address], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("ask: thread ") and '"The answer is 5."' in lines[0]
    assert 'stream: tool call calculator({"expression": "6*7"})' in lines
    assert sum(line.startswith("stream: token ") for line in lines) > 1, "tokens arrive one by one"
    assert any(line.startswith("stream: ") and '"The answer is 42."' in line for line in lines)
    assert any(line.startswith("history: 8 messages, ") for line in lines)
    assert any(line.startswith("rewind: head ") for line in lines)
    assert "not found: NOT_FOUND reason THREAD_NOT_FOUND domain threadline.dev" in lines
    assert lines[-1] == "ok"
