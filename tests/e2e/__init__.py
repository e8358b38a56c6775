"""Real server processes over loopback gRPC, on SQLite and a real PostgreSQL."""
