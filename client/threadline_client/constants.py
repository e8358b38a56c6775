"""Values the Threadline server and its clients must agree on.

They are defined here, once: the server imports them from this package, so a
client and a server of the same release cannot disagree about them.
"""

from __future__ import annotations

from typing import Final

ERROR_DOMAIN: Final = "threadline.dev"
"""The google.rpc.ErrorInfo domain of the reasons the Threadline contract defines."""

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
"""The "host:port" the server listens on, and clients and the CLI connect to, unless told otherwise."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""The largest gRPC message the server and the clients send or receive unless told otherwise."""

TOKEN_ENV: Final = "THREADLINE_TOKEN"
"""The environment variable clients and the CLI take their API key or JWT from when none is passed."""
