"""The client package builds as a wheel that installs and works in a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from tests.support import ROOT, ServerProcess

PROGRAM = """
import sys
from threadline_client import ThreadlineClient, pb
with ThreadlineClient(sys.argv[1]) as client:
    turn = client.ask("What is 20+22?")
    assert isinstance(turn, pb.Turn)
    print(turn.answer)
"""


def test_the_wheel_installs_and_talks_to_a_server(tmp_path: Path, sqlite_server: ServerProcess) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT / "client")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("threadline_client-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    installed = subprocess.run(
        [str(python), "-c", "import threadline_client as c, pathlib; print(pathlib.Path(c.__file__).parent)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    package = Path(installed.stdout.strip())
    assert package.is_relative_to(env_dir), "imported from the fresh venv, not the checkout"
    assert (package / "py.typed").exists() and (package / "v1" / "threadline_pb2.pyi").exists()
    answered = subprocess.run(
        [str(python), "-c", PROGRAM, sqlite_server.address], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert "42" in answered.stdout
