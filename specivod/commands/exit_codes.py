"""Exit codes of the ``specivod`` command (part of the contract, see DESIGN.md)."""

OK = 0
FAILED = 1
USAGE = 2
NEEDS_A_PERSON = 4
CONFIG = 78
