"""A TLS front for the emulator, so that the benchmark can measure downloads over HTTPS.

    python bench/tls_proxy.py CERT KEY PORT

Listens on 127.0.0.1 (a free port, printed as ``listening PORT`` once ready), takes TLS with the
certificate CERT and its key KEY, and passes each connection's bytes both ways to the plain HTTP
server on 127.0.0.1:PORT (two threads per connection; no parsing). Runs until killed. Its own CPU
(encryption included) is not counted for any client: the clients measured against it pay what a
client of the real API pays, the decryption and TLS records.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading


def pump(source: socket.socket, target: socket.socket) -> None:
    buffer = memoryview(bytearray(256 * 1024))
    try:
        while count := source.recv_into(buffer):
            target.sendall(buffer[:count])
    except OSError:
        pass
    finally:
        for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def serve(connection: socket.socket, context: ssl.SSLContext, port: int) -> None:
    try:
        secure = context.wrap_socket(connection, server_side=True)
    except OSError:
        connection.close()
        return
    try:
        backend = socket.create_connection(("127.0.0.1", port))
    except OSError:
        secure.close()
        return
    backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(backend, secure), daemon=True)
    back.start()
    pump(secure, backend)
    back.join()
    secure.close()
    backend.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python bench/tls_proxy.py CERT KEY PORT", file=sys.stderr)
        return 2
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(argv[0], argv[1])
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        connection, _ = listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(connection, context, int(argv[2])),
                         daemon=True).start()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(0)
