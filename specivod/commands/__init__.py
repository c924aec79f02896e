"""What each CLI command does, on top of settings, adapters and the engine.

Rule: a command returns an exit code and writes its result to stdout (one JSON object with
``--json``); diagnostics go to stderr. Commands never call ``sys.exit``.
"""
