"""Every command the README and docs show works as written: the docs cannot drift from the code.

The fenced blocks of each page are found by their info string:

- ```sh, ```bash and ```console (its `$ ` lines) blocks run, in page order, with bash -e against a real
  server (`threadline serve`, offline model, a temporary SQLite file) in a scratch folder that links
  to the checkout's top-level entries, with `.venv` the venv running the suite (`.venv/bin/threadline`
  works as written). The default address `127.0.0.1:50051` (or `localhost:50051`) in a command is
  replaced by the test server's.
- ```python blocks run the same way (the Python client against the same server).
- A block whose info string says `no-run` (```sh no-run) needs what a test cannot have: a real model
  key, docker, PostgreSQL administration, a server that runs until stopped. It is still parsed
  (`bash -n`, or compiled), and so is every other block.

In every shell block, run or not, each `threadline ...` command line must parse with the CLI's own
argument parser and each `make TARGET` must name a target of the Makefile: a renamed flag or
subcommand fails here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess, server_env
from threadline import cli

PAGES = sorted(
    {
        ROOT / "README.md",
        ROOT / "client" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "deploy").rglob("*.md"),
    }
)
SHELLS = {"sh", "bash", "console"}
NO_RUN = "no-run"
DEFAULT_ADDRESSES = ("127.0.0.1:50051", "localhost:50051")
BLOCK_TIMEOUT_S = 60
_FENCE = re.compile(r"^```(\S*)(.*)$")
_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "(", ")"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    run: bool
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language})"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    opened: tuple[int, str, bool] | None = None
    body: list[str] = []
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if opened is None and fence:
            opened, body = (number, fence.group(1), NO_RUN not in fence.group(2).split()), []
        elif opened is not None and line.strip() == "```":
            yield Block(page, opened[0], opened[1], opened[2], "\n".join(body) + "\n")
            opened = None
        elif opened is not None:
            body.append(line)
    assert opened is None, f"{page.relative_to(ROOT)}:{opened[0]}: a code block is not closed"


def _script(block: Block) -> str:
    """The shell script of a block: a console block's `$ ` lines (and their continuations), else all of it."""
    if block.language != "console":
        return block.text
    lines, continued = [], False
    for line in block.text.splitlines():
        if line.startswith("$ ") or continued:
            lines.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
    return "\n".join(lines) + "\n"


def _command_lines(script: str) -> Iterator[list[str]]:
    """Each simple command of the script as its words (continuations joined, comments and operators dropped)."""
    for line in script.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # a line inside a quoted string spanning lines: bash -n judges the script
        command: list[str] = []
        for word in [*words, ";"]:
            if word in _OPERATORS or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    command.append(word[:-1])
                while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[0]):
                    command.pop(0)  # VAR=value before the command
                if command:
                    yield command
                command = []
            else:
                command.append(word)


def _parse(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI's parser on argv; 0 when it parses without exiting."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def _help_of(words: list[str]) -> str:
    """The --help text of the (sub)command a command line runs: `keys new`, `ask`, or the root."""
    for prefix in (words[1:3], words[1:2], []):
        if prefix and prefix[0].startswith("-"):
            continue
        code, out, _ = _parse([*prefix, "--help"])
        if code == 0:
            return out
    raise AssertionError(f"no help for {words}")


def _check_threadline_command(words: list[str], where: Block) -> None:
    """The line parses, and names each flag in full (argparse would also take an abbreviation)."""
    code, _, err = _parse(words[1:])
    assert code == 0, f"{where}: `{shlex.join(words)}` does not parse:\n{err}"
    flags = set(re.findall(r"--[\w-]+", _help_of(words)))
    for word in words[1:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and flag != "--help":
            assert flag in flags, f"{where}: `{shlex.join(words)}`: {flag} is not a flag of that command"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, flags=re.MULTILINE))


def _shell_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.language in SHELLS]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_command_parses(page: Path) -> None:
    targets = _makefile_targets()
    for block in _shell_blocks(page):
        script = _script(block)
        checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, f"{block}: not a valid shell script:\n{checked.stderr}"
        for words in _command_lines(script):
            if Path(words[0]).name == "threadline":
                _check_threadline_command(words, block)
            elif words[0] == "make":
                named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
                assert set(named) <= targets, f"{block}: make {' '.join(named)}: no such target in the Makefile"
    for block in blocks(page):
        if block.language == "python":
            compile(block.text, str(block), "exec")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("docs-server")
    with ServerProcess(f"sqlite:///{folder / 'threadline.db'}", folder) as server:
        yield server


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like the checkout (links to its entries) where commands may write files."""
    folder = tmp_path_factory.mktemp("docs-cwd")
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (folder / entry.name).symlink_to(entry)
    # `.venv` is the venv running the suite (`make test-latest` runs it from another one).
    (folder / ".venv").symlink_to(sys.prefix)
    return folder


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.run and (b.language in SHELLS or b.language == "python")]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if _runnable(p)], ids=lambda p: str(p.relative_to(ROOT)) if isinstance(p, Path) else p
)
def test_every_command_runs(page: Path, docs_server: ServerProcess, scratch: Path) -> None:
    env = server_env(THREADLINE_ADDRESS=docs_server.address)
    # Not on PATH: a page must say `.venv/bin/threadline`, as a reader's shell needs.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    for block in _runnable(page):
        text = _script(block) if block.language in SHELLS else block.text
        for default in DEFAULT_ADDRESSES:
            text = text.replace(default, docs_server.address)
        command = (
            ["bash", "-e", "-o", "pipefail", "-c", text] if block.language in SHELLS else [sys.executable, "-c", text]
        )
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert done.returncode == 0, (
            f"{block} failed with exit code {done.returncode}:\n{text}\n--- stdout\n{done.stdout}\n--- stderr\n"
            f"{done.stderr}\n--- server log\n{docs_server.log()[-1500:]}"
        )
