"""Who holds a TCP port on this host: free before a launch, and held by *our* server after it.

A second server started on ports another one already holds must fail, not adopt the other
server: :class:`deploy.local_triton.LocalTriton` checks each fixed port with
:func:`port_taken` before launching, and only accepts "ready" once :func:`listening_ports`
shows that its own process listens on every port it was given (Linux ``/proc``).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

#: ``st`` of a listening socket in ``/proc/net/tcp``.
_LISTEN = "0A"


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``host:port`` fails because another socket listens there (or holds it bound).

    ``SO_REUSEADDR`` as the server sets it: connections of a previous server still in
    TIME_WAIT do not count as taken, a listener (on this address or on the wildcard) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _listening_inodes() -> dict[str, int]:
    """``{socket inode: port}`` of every listening TCP socket (IPv4 and IPv6) on this host."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return inodes


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (empty when it is gone or not ours to read)."""
    inodes = _listening_inodes()
    ports = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ports
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            ports.add(inodes[link[8:-1]])
    return ports
