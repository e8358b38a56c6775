"""The generated pages of docs/ are what `make docs` makes of config.py and the .proto files today."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "generate_docs.py"
PAGES = ("configuration.md", "errors.md")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "README.md", out / "README.md")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--readme", str(out / "README.md")], check=True, cwd=ROOT
    )
    return out


@pytest.mark.parametrize("page", PAGES)
def test_generated_page_is_not_stale(generated: Path, page: str) -> None:
    committed = ROOT / "docs" / page
    assert committed.exists(), f"docs/{page} is missing: run `make docs`"
    assert committed.read_text() == (generated / page).read_text(), f"docs/{page} is stale: run `make docs`"


def test_the_readme_table_of_reasons_is_not_stale(generated: Path) -> None:
    from threadline_client.v1 import error_reason_pb2

    readme = (ROOT / "README.md").read_text()
    assert readme == (generated / "README.md").read_text(), "README.md's table of reasons is stale: run `make docs`"
    for reason in error_reason_pb2.ErrorReason.keys():
        if reason != "ERROR_REASON_UNSPECIFIED":
            assert f"`{reason}`" in readme, reason


def test_every_setting_and_reason_is_documented(generated: Path) -> None:
    from threadline import config
    from threadline_client.v1 import error_reason_pb2

    configuration = (generated / "configuration.md").read_text()
    for name in config.Settings.__dataclass_fields__:
        assert f"`--{name.replace('_', '-')}`" in configuration
    errors = (generated / "errors.md").read_text()
    for reason in error_reason_pb2.ErrorReason.keys():
        if reason != "ERROR_REASON_UNSPECIFIED":
            assert f"| `{reason}` |" in errors
