"""Backups of a Specivo deployment: a PostgreSQL dump streamed from the database service, an
incremental snapshot of the data dir, a manifest, retention, restore, and the schema fingerprint.

Rule: a backup is listed, counted and restorable only once it is complete — every file fsynced,
checksummed and the dump validated — and a failure at any point leaves no backup behind, only a
``BackupError``. Every snapshot is complete on its own (unchanged files are hard links to the
previous snapshot's, never to the live data dir), so retention deleting any backup loses nothing
of another. Nothing here deletes a file of the data dir: a restore sets aside what it replaces.
Callers hold the host lock (``specivod.engine.lock.host_lock``); restore expects the app services
to be stopped already.

The facade is ``backups``; this package imports nothing, so a snapshot worker process
(``snapshot_worker``) starts without loading settings and database code.
"""
