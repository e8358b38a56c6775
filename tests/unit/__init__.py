"""In process: one package of the server at a time, on real SQLite and PostgreSQL where it stores."""
