"""`make dist`'s distributions: both packages build from their sdists and pass twine's checks."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support import ROOT

VERSION = (ROOT / "client" / "VERSION").read_text().strip()


def test_both_packages_build_and_pass_twine_check(tmp_path: Path) -> None:
    for project in (ROOT / "client", ROOT):  # as `make dist` builds them: the wheel is built from the sdist
        subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(project)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    built = sorted(p.name for p in tmp_path.iterdir())
    assert built == [
        f"threadline-{VERSION}-py3-none-any.whl",
        f"threadline-{VERSION}.tar.gz",
        f"threadline_client-{VERSION}-py3-none-any.whl",
        f"threadline_client-{VERSION}.tar.gz",
    ]
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *sorted(map(str, tmp_path.iterdir()))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tarfile.open(tmp_path / f"threadline-{VERSION}.tar.gz") as sdist:
        names = set(sdist.getnames())
    assert {f"threadline-{VERSION}/LICENSE", f"threadline-{VERSION}/client/VERSION"} <= names
