"""The upgrade transaction: plan, lock, back up, pull, pin, start, verify; roll back on failure;
recover whatever a killed process left behind.

Rule: every step is written to the journal before it acts, so a process killed at any instant
resumes to a known state. The engine talks to the world only through the adapter Protocols and
never imports docker, aiohttp or subprocess handling.
"""
