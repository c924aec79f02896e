"""Pure rules of specivod: versions and the upgrade policy, maintenance windows, upgrade states,
durations, and the typed errors every layer reports with.

Rule: nothing here does I/O or reads the clock; time is always an argument. This package imports
nothing from the rest of specivod.
"""
