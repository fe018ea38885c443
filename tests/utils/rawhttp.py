"""Raw HTTP/1.1 over a socket, for requests no client library will send (huge or countless
headers), and the peak memory of a server process."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

CHUNK = 64 * 1024


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed (or reset) the connection without an answer
    body: bytes
    sent: int  # bytes the kernel took before the server stopped reading


def send_raw(url: str, request: bytes, timeout: float = 30) -> RawAnswer:
    """Send `request` in chunks while reading the answer on another thread (a server that refuses
    early answers and closes while we are still sending)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    received = bytearray()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                received.extend(data)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        for at in range(0, len(request), CHUNK):
            sock.sendall(request[at:at + CHUNK])
            sent += len(request[at:at + CHUNK])
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    reader.join(timeout)
    sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    return RawAnswer(status, body, sent)


def peak_rss_bytes(pid: int | str) -> int:
    """The process's peak resident set (VmHWM) so far; `pid` may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")
