"""Connections to production databases: DSN parsing, engine-neutral helpers."""
