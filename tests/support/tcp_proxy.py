"""The real Docker Engine on a loopback TCP port, for as long as a test needs it: every connection to
127.0.0.1:<port> is relayed byte for byte to the engine's unix socket. Clients then take their tcp code path (the
Docker SDK, ``DOCKER_HOST=tcp://``) against the real engine, without reconfiguring dockerd."""

from __future__ import annotations

import contextlib
import socket
import threading


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def tcp_to_unix(unix_path):
    """Yields ``tcp://127.0.0.1:<port>`` relaying to ``unix_path``; closes the listener on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()
    open_socks = []

    def serve():
        while not stop.is_set():
            try:
                client, _addr = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(unix_path)
            except OSError:
                client.close()
                continue
            open_socks.extend((client, upstream))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "tcp://127.0.0.1:%d" % listener.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in serve()
        listener.close()
        thread.join(5)
        for sock in open_socks:
            with contextlib.suppress(OSError):
                sock.close()
