"""The `threadline` command: `serve` runs the server; `ask`, `history`, `rewind` talk to one."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from threadline import __version__, config
from threadline.client_commands import add_client_commands
from threadline.errors import ThreadlineError


def _serve(args: argparse.Namespace) -> int:
    from threadline.transport.server import configure_logging, run
    from threadline.transport.workers import serve_in_workers

    try:
        settings = config.load(args)
    except ThreadlineError as exc:
        print(f"threadline: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    logging.getLogger(__name__).info("threadline %s starting with\n%s", __version__, config.describe(settings))
    if settings.workers > 1:
        return serve_in_workers(settings)
    return run(settings)


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
