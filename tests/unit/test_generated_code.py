"""The committed generated code is what `make proto` makes of the .proto today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

COMMITTED = ROOT / "client" / "threadline_client" / "v1"


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_proto.py"), "--out", str(out)], check=True)
    generated = sorted(p.name for p in out.iterdir())
    committed = sorted(p.name for p in COMMITTED.iterdir() if p.name != "__init__.py" and p.is_file())
    assert generated == committed
    for name in generated:
        assert (out / name).read_text() == (COMMITTED / name).read_text(), f"{name} is stale: run `make proto`"
