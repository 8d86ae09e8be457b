"""Postgres access: the connection pool, the named SQL statements and the migrations."""
