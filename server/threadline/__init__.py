"""Threadline: a gRPC service that runs a checkpointed LangGraph agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("threadline")
except PackageNotFoundError:  # imported from a source tree that is not installed (bench/agent_server_graph.py)
    __version__ = "0+unknown"
