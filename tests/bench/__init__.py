"""Benchmarks that print figures (`make bench`, `python -m tests.bench`): never pass/fail on a timing.

The whole system runs as separate OS processes, as `eventflow up` runs it: SecantusDB (:memory:),
redis-server (no persistence), and `python -m usuarios|eventos|reservas` on free ports. The
benchmark process is only a gRPC client (and reads the stores at the end to check the DESIGN.md
invariants). It exits non-zero when an invariant is broken, never because something was slow.
"""
