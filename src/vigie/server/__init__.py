"""The HTTP process: FastAPI routes, API keys and sessions, the audit log, the dashboard.

It holds no store key and no pseudonymization key and never opens the keyfile: every
answer comes from the data service over its 0600 socket (``vigie.serve``).
"""
