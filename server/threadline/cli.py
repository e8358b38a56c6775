"""The `threadline` command: `serve` runs the server; `ask`, `history`, `rewind` talk to one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from threadline import __version__, config
from threadline.client_commands import add_client_commands
from threadline.errors import ThreadlineError


def _serve(args: argparse.Namespace) -> int:
    from threadline.transport.server import serve

    try:
        settings = config.load(args)
    except ThreadlineError as exc:
        print(f"threadline: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger(__name__).info("threadline %s starting with\n%s", __version__, config.describe(settings))
    try:
        asyncio.run(serve(settings))
    except ThreadlineError as exc:
        logging.getLogger(__name__).error("cannot start: %s", exc.message)
        return 1
    except (OSError, RuntimeError) as exc:
        logging.getLogger(__name__).error("cannot start: %s", exc)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line of `threadline`."""
    root = argparse.ArgumentParser(prog="threadline", description=__doc__)
    root.add_argument("--version", action="version", version=f"threadline {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    add_client_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command and returns its exit code."""
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code
