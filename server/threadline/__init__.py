"""Threadline: a gRPC service that runs a checkpointed LangGraph agent."""

from importlib.metadata import version

__version__ = version("threadline")
