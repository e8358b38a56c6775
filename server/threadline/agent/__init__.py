"""The default agent: its graph, state, model client (or offline model), tools and human approval.

It knows nothing of gRPC, of the engine that runs it, or of where checkpoints are stored.
"""
