"""`threadline health`: asks a server's grpc.health.v1 service whether it serves (a container's HEALTHCHECK)."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from threadline_client.constants import DEFAULT_ADDRESS

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1

_DEFAULT_TIMEOUT_SECONDS = 3.0

_EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_SERVING:<5}the server answered SERVING
  {EXIT_NOT_SERVING:<5}anything else: NOT_SERVING (starting, draining, or its database is
       unreachable), an unknown --service, no answer within --timeout"""


def add_health_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `health`; it sets `func`: call `args.func(args)` for its exit code."""
    health = subparsers.add_parser(
        "health",
        help="exit 0 when the server at --address answers SERVING (grpc.health.v1)",
        description="Prints the server's health status (SERVING, NOT_SERVING, ...) and exits 0 only on SERVING.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    health.add_argument(
        "--address",
        default=os.environ.get("THREADLINE_ADDRESS", DEFAULT_ADDRESS),
        help=f"the server, host:port (default: $THREADLINE_ADDRESS, else {DEFAULT_ADDRESS}); "
        "a listening address such as 0.0.0.0:50051 reaches the server on this host",
    )
    health.add_argument(
        "--service",
        default="",
        help='the service to ask about, e.g. threadline.v1.ThreadlineService (default: "", the whole server)',
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULT_TIMEOUT_SECONDS,
        help="seconds to wait for the answer (default: %(default)s)",
    )
    health.add_argument("--tls", action="store_true", help="connect over TLS (implied by the file options)")
    health.add_argument("--ca-file", help="PEM CAs that signed the server's certificate (default: the system's)")
    health.add_argument("--cert-file", help="PEM client certificate, for a server that requires one (mTLS)")
    health.add_argument("--key-file", help="PEM private key of --cert-file")
    health.set_defaults(func=_health)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A plaintext channel, or a TLS one when any TLS option is given (health needs no token)."""
    if not (args.tls or args.ca_file or args.cert_file or args.key_file):
        return grpc.insecure_channel(args.address)
    pem = {}
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(args, name)
        if path:
            with open(path, "rb") as file:
                pem[name] = file.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem.get("ca_file"), private_key=pem.get("key_file"), certificate_chain=pem.get("cert_file")
    )
    return grpc.secure_channel(args.address, credentials)


def _health(args: argparse.Namespace) -> int:
    try:
        channel = _channel(args)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_SERVING
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            print(f"error: {args.address}: {code.name}: {err.details() if isinstance(err, grpc.Call) else err}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_NOT_SERVING
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_SERVING if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING
