"""The tamper-evident audit log: every request, in a keyed hash chain of its own."""
