"""The shared base of Castwork: what every package needs and none of them owns.

Settings machinery (``settings``), the error tree's root (``errors``), logging with ids
(``logs``), atomic file writes (``files``), secrets masked in output (``redact``), which
hosts, origins and keys a server accepts (``access``), and thread pools (``threads``).

It imports no other Castwork package (``tests/test_layers.py`` holds it to that): ``voice``,
``media`` and ``workers`` build on it, the composition root ``castwork`` on them all.
"""

__all__ = ["access", "errors", "files", "logs", "metrics", "redact", "settings", "threads"]
