"""Test support: real processes (registry, dockerd) the suites start and stop themselves."""
