"""Where threads are kept: one checkpoint saver per backend, the thread registry, locks and
holds that keep one writer per thread, and the replica's hot states.

It knows nothing of gRPC, of the engine's turns or of the agent.
"""
