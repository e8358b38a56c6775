"""The engine: runs turns of a checkpointed LangGraph graph. It knows nothing of gRPC."""

from threadline.engine.engine import Engine

__all__ = ["Engine"]
