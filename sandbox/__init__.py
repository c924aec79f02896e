"""The sandbox: a real stack for the end-to-end tests and for ``make demo`` — a Docker Engine, a
registry, Compose v2, PostgreSQL, and fake Specivo releases whose behaviour each version fixes.

Rule: whoever starts a piece (the test session, the demo) stops it; nothing is installed here
(``scripts/bootstrap`` installs); all traffic stays on loopback.
"""
