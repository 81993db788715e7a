"""Fake Docker Engine sockets for fault injection: real unix sockets in a test's directory, served by a thread.

``EngineSocket(path, reply)`` answers every connection with ``reply`` (bytes): all at once, or drip-fed one byte every
``drip`` seconds after the first ``fast`` bytes (a valid answer that takes far longer than any deadline: with ``fast``
covering the status line and headers, only the body trickles). After the reply it keeps the connection open until the
client closes it (``hold``), as an sshd does after its banner, or closes it.

    with EngineSocket(tmp_path / "garbage.sock", GARBAGE) as sock:
        ...  # DOCKER_HOST=unix://<sock.path>
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

GARBAGE = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"  # what an sshd says first


def http_head(length, status=200, reason="OK"):
    return ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, length)).encode()


def http_reply(body, status=200, reason="OK"):
    """A complete HTTP/1.1 answer with a JSON body (``body``: bytes, or anything json.dumps takes)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return http_head(len(body), status, reason) + body


def container(job_id=None, project=None, service="worker_wrapper", number=1):
    """One entry of ``GET /containers/json`` as the Engine lists it (labels of a Compose worker or a job)."""
    labels = {}
    if job_id:
        labels["job_id"] = job_id
    if project:
        labels.update({"com.docker.compose.project": project, "com.docker.compose.service": service,
                       "com.docker.compose.oneoff": "False", "com.docker.compose.container-number": str(number)})
    return {"Id": "%064x" % (number + 7), "State": "running", "Labels": labels}


class EngineSocket:
    def __init__(self, path, reply, drip=None, fast=0, hold=True):
        self.path = str(path)
        self.reply = reply
        self.drip = drip
        self.fast = fast
        self.hold = hold
        self.connections = 0
        self.sent = 0           # bytes sent, all connections
        self.requests = []      # the first line of each request read
        self.stopping = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.server.bind(self.path)
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _addr = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _read_request(self, conn):
        conn.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))

    def _answer(self, conn):
        try:
            self._read_request(conn)
            if self.drip:
                if self.fast:
                    conn.sendall(self.reply[:self.fast])
                    self.sent += self.fast
                for i in range(self.fast, len(self.reply)):
                    if self.stopping.wait(self.drip if i else 0):
                        return
                    conn.sendall(self.reply[i:i + 1])
                    self.sent += 1
            else:
                conn.sendall(self.reply)
                self.sent += len(self.reply)
            if self.hold:
                conn.settimeout(0.2)
                while not self.stopping.is_set():
                    try:
                        if not conn.recv(4096):
                            return  # the client closed
                    except socket.timeout:
                        continue
        except OSError:
            return  # the client gave up (EPIPE, reset)
        finally:
            conn.close()

    def close(self):
        self.stopping.set()
        self.server.close()
        self.thread.join(2)
        if os.path.lexists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Stopwatch:
    """``with Stopwatch() as took: ...``; then ``took.s`` is the elapsed wall time in seconds."""

    def __enter__(self):
        self.started = time.monotonic()
        self.s = None
        return self

    def __exit__(self, *exc):
        self.s = time.monotonic() - self.started
