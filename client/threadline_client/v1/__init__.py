"""Generated protobuf and gRPC code for threadline.v1 (see scripts/generate_proto.py); do not edit."""
