"""Threadline: a gRPC service that runs a checkpointed LangGraph agent."""

__version__ = "0.1.0"
