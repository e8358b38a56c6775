"""The engine: runs turns of a checkpointed LangGraph graph. It knows nothing of gRPC.

The Engine itself is threadline.engine.engine.Engine; this package imports nothing, so that its
light modules (settings, context, turn kinds) cost no more than themselves to import.
"""
