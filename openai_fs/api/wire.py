"""Content bodies received straight into the caller's memory: a small HTTP/1.1 client for the
one request whose body is large, ``GET /files/{id}/content``.

httpx reads a body through httpcore and h11, which copy every byte three times (into h11's
receive buffer, out of it as a slice, into ``bytes``) before the caller sees it, with a good deal
of Python around each piece; the mount then copied it once more into its ring. Profiled on a
cold read of 1 GiB over loopback, those copies and that Python were most of the mount's CPU that
FUSE does not cost (bench/README.md, benchmark 9). Here a body is received with ``recv_into``
into memory the caller hands over (a download's ring, the write buffer of a cache file): the
kernel's copy out of the socket, and nothing else. Over TLS the ``ssl`` module's sockets decrypt
into that memory the same way.

* **Connections** (:class:`Connection`): plain TCP, or TLS with the context httpx would use
  (:func:`httpx.create_ssl_context`: its CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR``). A
  connection whose body was read to its end is kept for the next request (:class:`WirePool`);
  one found closed by the server is dropped, and a request that a kept connection dropped
  before any answer is sent again once on a new one.
* **The head**: the request is written and the answer's status line and headers parsed by h11,
  the parser httpx uses.
* **Bodies** (:class:`Body`) framed by ``Content-Length``, chunked, or (no length, not chunked)
  by the end of the connection. The request asks for ``Accept-Encoding: identity``.

What it does not do is left to httpx (the client sends the request through it instead): proxies,
redirects, and answers it does not read (a ``Content-Encoding``), signalled by
:class:`Unsuitable` before any body byte is read; and a client built on another transport (the
tests' ``httpx.MockTransport``) never uses this module.

Timeouts are httpx's: ``connect`` for the connection and its TLS handshake, ``write`` for
sending the request, ``read`` for each wait for bytes. Failures are the client's errors
(:class:`~openai_fs.api.errors.APIConnectionError`, :class:`~openai_fs.api.errors.APITimeoutError`)
with ``request_sent`` as httpx's would have it. No message quotes what the server sent.
"""

from __future__ import annotations

import math
import re
import select
import socket
import ssl
from dataclasses import dataclass
from typing import Callable

import h11
import trio

from openai_fs.api.errors import APIConnectionError, APITimeoutError

#: bytes read at once while an answer's head is awaited (body bytes that come with it are
#: copied once into the caller's memory)
HEAD_READ = 64 * 1024
#: bytes read at once for the framing between two chunks of a chunked body: little after a
#: large chunk (the next chunk's bytes then go straight to the caller), more after small ones
#: (several of them come in one read, and are copied once)
FRAMING_READ_AFTER_LARGE = 4 * 1024
FRAMING_READ_AFTER_SMALL = 64 * 1024
#: a chunk this large counts as large (see above)
LARGE_CHUNK = 64 * 1024
#: the longest chunk-size line, and trailer section, a body may have
MAX_LINE = 4096
MAX_TRAILERS = 64 * 1024
#: connections kept per server, and how long one may stay unused
MAX_IDLE = 8
IDLE_SECONDS = 30.0

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Unsuitable(Exception):
    """An answer this module does not read (a redirect, a ``Content-Encoding``): send the
    request through httpx instead. Raised before any body byte is read."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds (None: no limit), as httpx's ``Timeout``."""

    connect: float | None
    read: float | None
    write: float | None


@dataclass(slots=True)
class Head:
    """An answer's status line and headers (names lower-case)."""

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Unanswered(APIConnectionError):
    """The server closed the connection before sending a byte of an answer."""


class Connection:
    """One socket (plain, or an ``ssl.SSLSocket``) in non-blocking mode, driven by trio."""

    def __init__(self, sock: socket.socket, origin: Origin, *, method: str, path: str) -> None:
        self.sock = sock
        self.origin = origin
        self.method = method
        self.path = path
        #: requests sent on it
        self.requests = 0
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._scratch: memoryview | None = None

    @classmethod
    async def open(cls, origin: Origin, *, ssl_context: ssl.SSLContext | None,
                   timeout: float | None, method: str, path: str) -> Connection:
        with trio.move_on_after(_limit(timeout)) as scope:
            try:
                stream = await trio.open_tcp_stream(origin.host, origin.port)
            except OSError as exc:
                raise APIConnectionError(f"cannot connect to {origin.host}:{origin.port}: "
                                         f"{_reason(exc)}", method=method, path=path,
                                         request_sent=False) from None
            sock = socket.socket(fileno=stream.socket.detach())
            try:
                sock.setblocking(False)
                if origin.tls:
                    assert ssl_context is not None
                    sock = ssl_context.wrap_socket(sock, server_hostname=origin.host,
                                                   do_handshake_on_connect=False)
                    await _handshake(sock)
            except OSError as exc:
                sock.close()
                raise APIConnectionError(f"cannot connect to {origin.host}:{origin.port}: "
                                         f"{_reason(exc)}", method=method, path=path,
                                         request_sent=False) from None
            except BaseException:
                sock.close()
                raise
        if scope.cancelled_caught:
            raise APITimeoutError("timed out (ConnectTimeout)", method=method, path=path,
                                  request_sent=False)
        return cls(sock, origin, method=method, path=path)

    def close(self) -> None:
        self.sock.close()

    def stale(self) -> bool:
        """Whether an idle connection is unusable: the server closed it, or sent something
        nobody asked for."""
        try:
            if self._tls and self.sock.pending():
                return True
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    # ------------------------------------------------------------- bytes

    async def send_all(self, data: bytes, timeout: float | None) -> None:
        view = memoryview(data)
        while view:
            try:
                count = self.sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                await self._wait(trio.lowlevel.wait_writable, timeout, "WriteTimeout", False)
                continue
            except ssl.SSLWantReadError:
                await self._wait(trio.lowlevel.wait_readable, timeout, "WriteTimeout", False)
                continue
            except OSError as exc:
                raise APIConnectionError(f"the request could not be sent: {_reason(exc)}",
                                         method=self.method, path=self.path,
                                         request_sent=False) from None
            view = view[count:]

    async def recv_into(self, view: memoryview, timeout: float | None) -> int:
        """Receive at most ``len(view)`` (> 0) bytes into ``view``; 0 when the server closed
        the connection."""
        waited = False
        while True:
            try:
                count = self.sock.recv_into(view)
            except (BlockingIOError, ssl.SSLWantReadError):
                await self._wait(trio.lowlevel.wait_readable, timeout, "ReadTimeout", True)
                waited = True
                continue
            except ssl.SSLWantWriteError:
                await self._wait(trio.lowlevel.wait_writable, timeout, "ReadTimeout", True)
                waited = True
                continue
            except OSError as exc:
                raise self._broke(exc) from None
            if self._tls and count:
                # TLS hands over one record (at most 16 KiB) per call: take the others that
                # are already here too, rather than go round the caller's loop for each
                count += self._more_records(view[count:])
            if not waited:
                # bytes were there at once: let the other tasks run (and a cancel land)
                await trio.lowlevel.checkpoint()
            return count

    def recv_ready(self, view: memoryview) -> int | None:
        """As :meth:`recv_into`, without waiting: None when no byte is there now."""
        try:
            count = self.sock.recv_into(view)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError as exc:
            raise self._broke(exc) from None
        if self._tls and count:
            count += self._more_records(view[count:])
        return count

    def _broke(self, exc: OSError) -> APIConnectionError:
        return APIConnectionError(f"the connection broke: {_reason(exc)}", method=self.method,
                                  path=self.path, request_sent=True)

    def _more_records(self, view: memoryview) -> int:
        count = 0
        while count < len(view):
            try:
                more = self.sock.recv_into(view[count:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except OSError:
                break       # the next call meets the error again, and reports it
            if not more:
                break       # the end: the next call returns 0
            count += more
        return count

    async def _wait(self, wait: Callable, timeout: float | None, name: str, sent: bool) -> None:
        if timeout is None:
            await wait(self.sock)
            return
        with trio.move_on_after(timeout) as scope:
            await wait(self.sock)
        if scope.cancelled_caught:
            raise APITimeoutError(f"timed out ({name})", method=self.method, path=self.path,
                                  request_sent=sent)

    def scratch(self) -> memoryview:
        if self._scratch is None:
            self._scratch = memoryview(bytearray(HEAD_READ))
        return self._scratch

    # ------------------------------------------------------------ a request

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      timeouts: Timeouts) -> tuple[Head, bytes]:
        """Send a request without a body and read its answer's head: the head, and the bytes
        after it that came with it."""
        self.requests += 1
        state = h11.Connection(h11.CLIENT)
        try:
            data = state.send(h11.Request(method=method, target=target, headers=headers))
            data += state.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11's message may quote a header's value: the key's, say
            raise APIConnectionError("the request could not be written (a header that is not "
                                     "valid in HTTP/1.1)", method=self.method, path=self.path,
                                     request_sent=False) from None
        await self.send_all(data, timeouts.write)
        scratch = self.scratch()
        received = 0
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError:
                raise APIConnectionError("the answer is not valid HTTP/1.1", method=self.method,
                                         path=self.path, request_sent=True) from None
            if event is h11.NEED_DATA:
                count = await self.recv_into(scratch, timeouts.read)
                if count == 0 and received == 0:
                    raise _Unanswered("the server closed the connection without answering",
                                      method=self.method, path=self.path, request_sent=True)
                received += count
                state.receive_data(bytes(scratch[:count]))
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise APIConnectionError("the server closed the connection without answering",
                                     method=self.method, path=self.path, request_sent=True)
        leftover, _ = state.trailing_data
        head = Head(event.status_code, bytes(event.reason), bytes(event.http_version),
                    [(bytes(name), bytes(value)) for name, value in event.headers])
        return head, bytes(leftover)


class Body:
    """An answer's body, received into the caller's memory (:meth:`readinto`)."""

    LENGTH, CHUNKED, UNTIL_CLOSE = "length", "chunked", "until close"
    _SIZE, _DATA, _CRLF, _TRAILER = range(4)

    def __init__(self, connection: Connection, pool: WirePool | None, head: Head,
                 leftover: bytes, *, read_timeout: float | None, method: str = "GET") -> None:
        self._connection: Connection | None = connection
        self._pool = pool
        self._timeout = read_timeout
        self._pending = leftover
        self._taken = 0
        self._state = self._DATA
        self._trailers = 0
        self._large = True
        self.complete = False
        self.received = 0
        length = head.header(b"content-length")
        if method == "HEAD" or head.status in (204, 304) or head.status < 200:
            self.framing, self._left = self.LENGTH, 0
        elif head.header(b"transfer-encoding") is not None:
            # h11 accepts no Transfer-Encoding but chunked
            self.framing, self._left, self._state = self.CHUNKED, 0, self._SIZE
        elif length is not None:
            self.framing, self._left = self.LENGTH, int(length)
        else:
            self.framing, self._left = self.UNTIL_CLOSE, -1
        connection_header = (head.header(b"connection") or b"").lower()
        self._keep = head.http_version == b"1.1" and b"close" not in connection_header \
            and self.framing != self.UNTIL_CLOSE
        if self.framing == self.LENGTH and self._left == 0:
            self._finish()

    @property
    def length(self) -> int | None:
        """The body's length, when its head says it."""
        return self._left + self.received if self.framing == self.LENGTH else None

    async def readinto(self, view: memoryview) -> int:
        """Receive the next bytes of the body into ``view`` (not empty): how many; 0 at its
        end. Waits only until some bytes are there. A body that breaks off raises
        APIConnectionError."""
        try:
            filled = await self._receive(view)
        except BaseException:
            self.close()        # in an unknown state: it cannot carry another request
            raise
        self.received += filled
        return filled

    async def _receive(self, view: memoryview) -> int:
        filled = 0
        while filled < len(view) and not self.complete:
            if self._state != self._DATA:
                if not await self._framing(wait=filled == 0):
                    break
                continue
            room = len(view) - filled
            want = room if self._left < 0 else min(room, self._left)
            if self._taken < len(self._pending):
                count = min(want, len(self._pending) - self._taken)
                view[filled:filled + count] = memoryview(self._pending)[
                    self._taken:self._taken + count]
                self._taken += count
            elif filled:
                # the caller has bytes already: more only if they are here now (the end of
                # the connection, if that is what is here, is met by the next call)
                assert self._connection is not None
                count = self._connection.recv_ready(view[filled:filled + want])
                if not count:
                    break
            else:
                assert self._connection is not None
                count = await self._connection.recv_into(view[:want], self._timeout)
                if count == 0:
                    if self.framing == self.UNTIL_CLOSE:
                        self._finish()
                        break
                    raise self._broken()
            filled += count
            if self._left >= 0:
                self._left -= count
                if self._left == 0:
                    if self.framing == self.LENGTH:
                        self._finish()
                    else:
                        self._state = self._CRLF
        return filled

    async def read_limited(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (an error answer's), at most; the rest is not read."""
        buffer = bytearray(limit)
        view = memoryview(buffer)
        size = 0
        while size < limit:
            count = await self.readinto(view[size:])
            if not count:
                break
            size += count
        view.release()
        return bytes(buffer[:size])

    async def _framing(self, *, wait: bool) -> bool:
        """Parse the framing between chunks; False when that needs bytes not yet here and
        ``wait`` is off."""
        line = await self._line(wait=wait)
        if line is None:
            return False
        if self._state == self._SIZE:
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise self._broken("a chunk of the body has no valid size")
            size = int(size_text, 16)
            self._large = size >= LARGE_CHUNK
            if size:
                self._state, self._left = self._DATA, size
            else:
                self._state = self._TRAILER
        elif self._state == self._CRLF:
            if line:
                raise self._broken("a chunk of the body is longer than its size")
            self._state = self._SIZE
        else:
            self._trailers += len(line) + 2
            if self._trailers > MAX_TRAILERS:
                raise self._broken("the body's trailers are too long")
            if not line:
                self._finish()
        return True

    async def _line(self, *, wait: bool) -> bytes | None:
        """The next CRLF-terminated line of framing, without its CRLF."""
        while True:
            end = self._pending.find(b"\r\n", self._taken)
            if end >= 0:
                line = self._pending[self._taken:end]
                self._taken = end + 2
                return line
            if len(self._pending) - self._taken > MAX_LINE:
                raise self._broken("a chunk of the body has no valid size")
            if not wait:
                return None
            assert self._connection is not None
            scratch = self._connection.scratch()
            size = FRAMING_READ_AFTER_LARGE if self._large else FRAMING_READ_AFTER_SMALL
            count = await self._connection.recv_into(scratch[:size], self._timeout)
            if count == 0:
                raise self._broken()
            self._pending = self._pending[self._taken:] + scratch[:count]
            self._taken = 0

    def _broken(self, why: str | None = None) -> APIConnectionError:
        connection = self._connection
        self.close()
        expected = f" of {self.length}" if self.length is not None else ""
        return APIConnectionError(
            why or f"the body ended after {self.received}{expected} bytes",
            method=connection.method if connection else "",
            path=connection.path if connection else "", request_sent=True)

    def _finish(self) -> None:
        self.complete = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._keep and self._taken == len(self._pending) and self._pool is not None:
            self._pool.give_back(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Leave the body (read to its end or not): a connection whose body was not read to
        its end cannot carry another request and is closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        self.close()


class WirePool:
    """Connections by server, kept between requests (at most :data:`MAX_IDLE` each, for
    :data:`IDLE_SECONDS`)."""

    def __init__(self, *, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self._make_ssl_context = ssl_context
        self._ssl_context: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[tuple[Connection, float]]] = {}
        #: connections made (for the tests and ``status``)
        self.opened = 0

    async def request(self, origin: Origin, method: str, target: bytes,
                      headers: list[tuple[bytes, bytes]], timeouts: Timeouts, *,
                      path: str) -> tuple[Head, Body]:
        """Send a request on a kept connection or a new one; its answer's head and body."""
        while True:
            connection = self._take(origin)
            reused = connection is not None
            if connection is None:
                if origin.tls and self._ssl_context is None:
                    self._ssl_context = self._make_ssl_context()
                    # what httpcore offers for an HTTP/1.1 connection
                    self._ssl_context.set_alpn_protocols(["http/1.1"])
                connection = await Connection.open(origin, ssl_context=self._ssl_context,
                                                   timeout=timeouts.connect, method=method,
                                                   path=path)
                self.opened += 1
            connection.method, connection.path = method, path
            try:
                head, leftover = await connection.request(method, target, headers, timeouts)
            except _Unanswered as exc:
                connection.close()
                if reused:
                    continue        # the server had closed it meanwhile: once more, anew
                raise APIConnectionError(exc.message, method=method, path=path,
                                         request_sent=True) from None
            except BaseException:
                connection.close()
                raise
            return head, Body(connection, self, head, leftover, read_timeout=timeouts.read,
                              method=method)

    def _take(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = trio.current_time()
        while idle:
            connection, since = idle.pop()
            if now - since <= IDLE_SECONDS and not connection.stale():
                return connection
            connection.close()
        return None

    def give_back(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE:
            connection.close()
            return
        idle.append((connection, trio.current_time()))

    def close(self) -> None:
        for idle in self._idle.values():
            for connection, _ in idle:
                connection.close()
        self._idle.clear()


async def _handshake(sock: ssl.SSLSocket) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await trio.lowlevel.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await trio.lowlevel.wait_writable(sock)


def _limit(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc) or type(exc).__name__
