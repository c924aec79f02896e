"""Setting specivod up: ``specivod init`` (discover a compose project, write a commented
configuration) and the configuration reference generated from the settings models.

Rules: nothing here is used by the daemon or the upgrade engine. Discovery is pure
(``discovery.py``: compose's rendered documents in, findings out); reading the project and the
Docker Engine is ``project.py``; the text written is ``render.py`` and ``reference.py``.
"""
