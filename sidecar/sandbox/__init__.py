"""Local provider emulators used by `sidecar dev`, `make run` and the tests."""
