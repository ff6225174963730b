"""Load benchmark: the sidecar against the upstream directly and against a minimal forwarder.

``python -m bench`` (``make bench``) starts every party as its own process on loopback, so the
sidecar's RSS can be read from ``/proc`` and its CPU is not shared with the load generator's
event loop. Numbers are reported against targets, never asserted: timing belongs here, not in
the test suite.
"""
