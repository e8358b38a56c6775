"""Python client of the Threadline gRPC service (threadline.v1.ThreadlineService).

    from threadline_client import ThreadlineClient

    with ThreadlineClient("127.0.0.1:50051") as client:
        turn = client.ask("What is 2+3?")
        print(turn.answer, turn.thread_id)

AsyncThreadlineClient offers the same methods for asyncio. Failed calls raise
ThreadlineError; `pb` holds the message types (pb.Turn, pb.Checkpoint, ...);
threadline_client.constants the values client and server agree on (the default
address, the message size limit, the ErrorInfo domain).
"""

from importlib.metadata import PackageNotFoundError, version

from . import constants
from ._async_client import AsyncThreadlineClient
from ._errors import ThreadlineError
from ._sync_client import ThreadlineClient
from .v1 import threadline_pb2 as pb

try:
    __version__ = version("threadline-client")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["AsyncThreadlineClient", "ThreadlineClient", "ThreadlineError", "__version__", "constants", "pb"]
