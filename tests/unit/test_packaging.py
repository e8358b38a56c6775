"""Both packages are ready to publish: one version, the same license, the server pinned to its own client."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import threadline
import threadline_client
from tests.support import ROOT
from threadline.cli import main

VERSION = (ROOT / "client" / "VERSION").read_text().strip()


def test_both_packages_report_the_one_version() -> None:
    assert threadline.__version__ == threadline_client.__version__ == VERSION


def test_threadline_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"threadline {VERSION}"


def test_the_server_requires_the_client_of_its_release() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"threadline-client=={VERSION}" in dependencies


@pytest.mark.parametrize("project", [ROOT, ROOT / "client"])
def test_each_package_ships_the_apache_license(project: Path) -> None:
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert metadata["license"] == "Apache-2.0" and metadata["license-files"] == ["LICENSE"]
    assert (project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
