"""The data service: the one process that holds the store and its keys while vigie serves.

It publishes a read-only snapshot of the store after each sync, answers KPI queries,
sandboxed SQL, status and verify over a 0600 Unix socket, and runs the scheduled sync.
The HTTP process (``vigie.server``) talks to it and holds no key.
"""
