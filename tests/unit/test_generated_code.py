"""The committed generated code is what `make proto` makes of the .proto today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

COMMITTED = {
    "threadline.v1": ROOT / "client" / "threadline_client" / "v1",
    "grpc.reflection.v1": ROOT / "server" / "threadline" / "transport" / "reflection_v1",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("generated")
    folders = {"threadline.v1": out / "v1", "grpc.reflection.v1": out / "reflection_v1"}
    script = ROOT / "scripts" / "generate_proto.py"
    command = [sys.executable, str(script), "--out", str(folders["threadline.v1"])]
    subprocess.run([*command, "--reflection-out", str(folders["grpc.reflection.v1"])], check=True)
    return folders


@pytest.mark.parametrize("package", sorted(COMMITTED))
def test_generated_code_is_not_stale(generated: dict[str, Path], package: str) -> None:
    out, committed = generated[package], COMMITTED[package]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__init__.py" and p.is_file())
    for name in names:
        assert (out / name).read_text() == (committed / name).read_text(), f"{name} is stale: run `make proto`"
