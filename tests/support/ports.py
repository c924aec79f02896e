"""Free loopback ports for test servers.

The kernel may hand out the same free port to two probes in a row once the first is closed, so
a deployment once got one port for its database and its api. A port handed out here is not handed
out again by this process."""

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port that was not handed out already")
