"""Plumbing shared by the three services and the `eventflow` command.

Nothing here knows the domain: structured logging, the error contract (domain
exceptions mapped to rich gRPC statuses), the gRPC server skeleton (health,
reflection, graceful shutdown), MongoDB client helpers, page tokens, and the
launcher of the embedded MongoDB-compatible server and Redis.
"""
