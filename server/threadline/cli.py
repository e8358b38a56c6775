"""The `threadline` command: `serve` runs the server; `ask`, `history`, `rewind` talk to one; `health` checks one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from threadline import __version__, config
from threadline.client_commands import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    add_client_commands,
)
from threadline.errors import ThreadlineError
from threadline.health_command import add_health_command

_SERVE_EXIT_CODES_HELP = (
    f"serve exits {EXIT_OK} once SIGTERM or SIGINT has stopped it, {EXIT_FAILED} when it could not start\n"
    f"or a worker failed, and {EXIT_USAGE} on invalid arguments or settings."
)


def _serve(args: argparse.Namespace) -> int:
    from threadline.transport.server import configure_logging, run
    from threadline.transport.workers import serve_in_workers

    try:
        settings = config.load(args)
    except ThreadlineError as exc:
        print(f"threadline: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, log_format=settings.log_format)
    logging.getLogger(__name__).info("threadline %s starting with\n%s", __version__, config.describe(settings))
    if settings.workers > 1:
        return serve_in_workers(settings)
    return run(settings)


def _new_key(args: argparse.Namespace) -> int:
    from threadline.auth.api_keys import key_line, new_key, parse_scopes

    try:
        key = new_key()
        line = key_line(key, args.tenant, parse_scopes(args.scopes), args.label)
    except ThreadlineError as exc:
        print(f"threadline: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print(f"line for THREADLINE_API_KEYS_FILE:\n{line}")
    return EXIT_OK


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser(
        "new",
        help="print a new random API key and its line for THREADLINE_API_KEYS_FILE",
        description="Prints a new key (32 random bytes, URL-safe) and the keys-file line holding its SHA-256. "
        "Only the line goes to the server; the key goes to the client, once.",
    )
    new.add_argument("--tenant", required=True, help="the tenant whose threads the key reaches")
    new.add_argument("--scopes", default="read,write,delete", help="comma-separated (default: %(default)s)")
    new.add_argument("--label", default="", help="names the key in the audit trail (e.g. ci)")
    new.set_defaults(func=_new_key)


def parser() -> argparse.ArgumentParser:
    """The command line of `threadline`."""
    root = argparse.ArgumentParser(
        prog="threadline",
        description=__doc__,
        epilog=f"{EXIT_CODES_HELP}\n\n{_SERVE_EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"threadline {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server", epilog=_SERVE_EXIT_CODES_HELP)
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    add_client_commands(commands)
    _add_keys_commands(commands)
    add_health_command(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command and returns its exit code.

    A reader that closes stdout early (`threadline threads | head -1`) ends the
    command quietly with EXIT_STDOUT_CLOSED: no traceback, nothing more written.
    """
    try:
        return _run(argv)
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_STDOUT_CLOSED


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
        code: int = args.func(args)
    finally:
        # Flushed here, not at exit: a closed stdout then raises where main() handles it.
        sys.stdout.flush()
    return code


def _discard_stdout() -> None:
    """Points stdout's descriptor at devnull, so the flush at exit writes what is left to nobody.

    Python's own recipe (docs.python.org, "Note on SIGPIPE"). SIGPIPE itself stays ignored: its
    default action would end the process on any closed pipe or socket, not only on stdout.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
