"""Free TCP ports on 127.0.0.1 for the processes the hub and its launcher start."""

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now, never the same one twice in this process.

    The kernel may offer a just-closed port again; two ports picked in a row for two servers must differ.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
