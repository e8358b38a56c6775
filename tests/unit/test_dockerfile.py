"""The Dockerfile stays consistent with the code (images cannot be built on every machine that tests)."""

from __future__ import annotations

import json
import re
import shlex

from tests.support import ROOT
from threadline.cli import parser
from threadline.health_command import add_health_command

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line[len(name) :].strip() for line in joined.splitlines() if line.startswith(f"{name} ")]


def test_the_healthcheck_runs_threadline_health_at_the_configured_address() -> None:
    (healthcheck,) = _instructions("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert command[:2] == ["threadline", "health"] and "--address" not in command
    args = parser().parse_args(command[1:])
    assert args.func.__module__ == add_health_command.__module__


def test_the_default_address_listens_on_the_exposed_port() -> None:
    env = " ".join(_instructions("ENV"))
    address = re.search(r"THREADLINE_ADDRESS=(\S+)", env)
    assert address is not None
    assert address.group(1).rsplit(":", 1)[1] == " ".join(_instructions("EXPOSE"))


def test_the_build_copies_what_the_packages_build_from() -> None:
    copied = {path for line in _instructions("COPY") if "--from" not in line for path in shlex.split(line)[:-1]}
    assert {"pyproject.toml", "README.md", "LICENSE", "constraints.txt", "client", "server"} <= copied
