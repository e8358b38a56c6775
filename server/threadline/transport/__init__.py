"""The gRPC transport: servicer, error mapping, conversion to the contract's messages, server lifecycle."""
