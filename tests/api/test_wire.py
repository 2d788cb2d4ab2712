"""openai_fs.api.wire: the HTTP/1.1 content reader that receives bodies into the caller's memory.

Body framing is driven byte by byte through a scripted connection (every way the bytes can be
split between reads, every size of the caller's memory); connections, keep-alive, timeouts and
TLS against real sockets on 127.0.0.1; and the FilesClient's use of it (headers, fallbacks to
httpx) against a scripted server.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections import deque
from functools import partial

import pytest
import trio

from openai_fs.api import APIConnectionError, APITimeoutError, FilesClient, RetryPolicy
from openai_fs.api.secret import Secret
from openai_fs.api.wire import Body, Head, Origin, Timeouts, WirePool

KEY = "sk-wire-test-0123456789abcdef"
QUICK = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02, timeout=2.0)
TIMEOUTS = Timeouts(connect=5.0, read=5.0, write=5.0)


# ------------------------------------------------------------------ framing, byte by byte

class ScriptedConnection:
    """What Body needs of a Connection: bytes come in the given pieces (a piece is cut when
    the reader's memory is smaller); an empty piece list then means the server closed."""

    def __init__(self, pieces: list[bytes], *, broken: bool = False) -> None:
        self.pieces = deque(piece for piece in pieces if piece)
        self.broken = broken
        self.closed = False
        self.method, self.path = "GET", "/v1/files/file-1/content"
        self.reads = 0
        self._scratch = memoryview(bytearray(64 * 1024))

    async def recv_into(self, view: memoryview, timeout: float | None) -> int:
        assert len(view) > 0 and not self.closed
        self.reads += 1
        if not self.pieces:
            if self.broken:
                raise APIConnectionError("the connection broke: reset", request_sent=True)
            return 0
        return self._take(view)

    def recv_ready(self, view: memoryview) -> int | None:
        if not self.pieces:
            return None         # nothing now; the next recv_into meets the end
        return self._take(view)

    def _take(self, view: memoryview) -> int:
        piece = self.pieces.popleft()
        count = min(len(view), len(piece))
        view[:count] = piece[:count]
        if count < len(piece):
            self.pieces.appendleft(piece[count:])
        return count

    def scratch(self) -> memoryview:
        return self._scratch

    def close(self) -> None:
        self.closed = True


class KeepingPool:
    def __init__(self) -> None:
        self.kept: list[object] = []

    def give_back(self, connection: object) -> None:
        self.kept.append(connection)


def head(status: int = 200, **headers: str) -> Head:
    return Head(status, b"OK", b"1.1", [(name.replace("_", "-").encode(), value.encode())
                                        for name, value in headers.items()])


async def read_body(body: Body, size: int) -> bytes:
    out = bytearray()
    view = memoryview(bytearray(size))
    while count := await body.readinto(view):
        assert 0 < count <= size
        out += view[:count]
    return bytes(out)


def chunked(data: bytes, sizes: list[int], *, extension: bytes = b"",
            trailers: bytes = b"") -> bytes:
    out, at = bytearray(), 0
    for size in sizes:
        piece = data[at:at + size]
        at += size
        out += b"%x%s\r\n" % (len(piece), extension) + piece + b"\r\n"
    assert at == len(data)
    return bytes(out + b"0\r\n" + trailers + b"\r\n")


def splits(wire: bytes):
    """The wire bytes cut in one place, for every place, and in two places for a sample."""
    yield [wire]
    for cut in range(1, len(wire)):
        yield [wire[:cut], wire[cut:]]
    for first in range(1, len(wire), 23):
        for second in range(first + 1, len(wire), 19):
            yield [wire[:first], wire[first:second], wire[second:]]


DATA = bytes(range(256)) + b"tail"


@pytest.mark.parametrize("view_size", [1, 5, 64, 100_000])
async def test_a_chunked_body_reads_the_same_however_it_is_split(view_size):
    wire = chunked(DATA, [1, 200, 17, len(DATA) - 218], extension=b";name=value",
                   trailers=b"X-Trailer: yes\r\n")
    for leftover_cut in (0, 3, 40):
        for pieces in splits(wire[leftover_cut:]):
            connection = ScriptedConnection(pieces)
            pool = KeepingPool()
            body = Body(connection, pool, head(transfer_encoding="chunked"),
                        wire[:leftover_cut], read_timeout=None)
            assert await read_body(body, view_size) == DATA
            assert body.complete and pool.kept == [connection] and not connection.closed


@pytest.mark.parametrize("view_size", [1, 7, 100_000])
async def test_a_length_body_reads_exactly_its_length(view_size):
    for leftover_cut in (0, 2, len(DATA)):
        for pieces in splits(DATA[leftover_cut:] + b"NEXT ANSWER"):
            connection = ScriptedConnection(pieces)
            pool = KeepingPool()
            body = Body(connection, pool, head(content_length=str(len(DATA))),
                        DATA[:leftover_cut], read_timeout=None)
            assert await read_body(body, view_size) == DATA
            assert body.length == len(DATA) and body.complete
            # what follows the body is never read by it
            assert pool.kept == [connection]
            assert b"".join(connection.pieces) == b"NEXT ANSWER"


async def test_large_chunks_go_straight_into_the_callers_memory():
    big = os.urandom(1024 * 1024)
    wire = chunked(big * 2, [len(big), len(big)])
    connection = ScriptedConnection([wire[i:i + 65536] for i in range(0, len(wire), 65536)])
    body = Body(connection, KeepingPool(), head(transfer_encoding="chunked"), b"",
                read_timeout=None)
    assert await read_body(body, 256 * 1024) == big * 2
    # reads of data land in the caller's memory; only the framing between the chunks (and the
    # few bytes of data that come with it) is read into the connection's scratch memory
    assert connection.reads <= 2 * 16 + 6


async def test_many_small_chunks_are_delivered_together():
    data = os.urandom(20_000)
    wire = chunked(data, [100] * 200)
    connection = ScriptedConnection([wire])
    body = Body(connection, KeepingPool(), head(transfer_encoding="chunked"), b"",
                read_timeout=None)
    view = memoryview(bytearray(len(data)))
    first = await body.readinto(view)
    assert first > 10 * 100        # not one chunk per call
    assert bytes(view[:first]) + await read_body(body, 4096) == data


async def test_a_body_without_length_or_chunks_ends_with_the_connection():
    connection = ScriptedConnection([DATA[:10], DATA[10:]])
    body = Body(connection, KeepingPool(), Head(200, b"OK", b"1.0", []), b"",
                read_timeout=None)
    assert body.length is None
    assert await read_body(body, 64) == DATA
    assert connection.closed        # not kept: it ended


async def test_an_empty_body_completes_at_once():
    for answer in (head(content_length="0"), head(204), head(304, content_length="10")):
        connection = ScriptedConnection([b"HTTP/1.1 200 OK\r\n"])
        pool = KeepingPool()
        body = Body(connection, pool, answer, b"", read_timeout=None)
        assert body.complete and await body.readinto(memoryview(bytearray(8))) == 0
        assert pool.kept == [connection] and connection.reads == 0


@pytest.mark.parametrize("answer,wire", [
    ("length", DATA[:100]),                                  # shorter than announced
    ("chunked", chunked(DATA, [len(DATA)])[:50]),            # dropped mid-chunk
    ("chunked", chunked(DATA, [len(DATA)])[:-5]),            # dropped before the last chunk
    ("chunked", b"1"),                                       # dropped in a size line
])
async def test_a_body_that_breaks_off_is_a_connection_error(answer, wire):
    for broken in (False, True):
        connection = ScriptedConnection([wire], broken=broken)
        headers = head(content_length=str(len(DATA))) if answer == "length" else \
            head(transfer_encoding="chunked")
        body = Body(connection, KeepingPool(), headers, b"", read_timeout=None)
        with pytest.raises(APIConnectionError) as failure:
            await read_body(body, 64)
        assert failure.value.request_sent
        assert connection.closed and not body.complete
        if answer == "length" and not broken:
            assert f"after 100 of {len(DATA)} bytes" in failure.value.message


@pytest.mark.parametrize("wire", [
    b"zz\r\nabc\r\n0\r\n\r\n",                   # not hex
    b"0x3\r\nabc\r\n0\r\n\r\n",                  # a prefix int() would take
    b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",   # so would this
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",                     # no size at all
    b"1" * 17 + b"\r\n",                         # more than 16 hex digits
    b"3\r\nabcdef\r\n0\r\n\r\n",                 # a chunk longer than its size
    b"3" + b" " * 5000,                          # a size line that never ends
])
async def test_chunk_framing_that_is_not_valid_is_a_connection_error(wire):
    connection = ScriptedConnection([wire])
    body = Body(connection, KeepingPool(), head(transfer_encoding="chunked"), b"",
                read_timeout=None)
    with pytest.raises(APIConnectionError):
        await read_body(body, 64)
    assert connection.closed


async def test_a_key_that_is_not_a_valid_header_is_not_quoted(nursery):
    server = Server([answer(b"unused")])
    await server.serve(nursery)
    bad = KEY + "\r\nX-Injected: 1"
    async with FilesClient(api_key=Secret(bad), base_url=f"http://127.0.0.1:{server.port}/v1",
                           retry=QUICK) as client:
        with pytest.raises(APIConnectionError) as failure:
            await client.read_content("file-1")
    assert KEY not in str(failure.value) and not failure.value.request_sent
    assert server.requests == []


async def test_a_message_never_quotes_the_servers_bytes():
    connection = ScriptedConnection([KEY.encode() + b"\r\n"])
    body = Body(connection, KeepingPool(), head(transfer_encoding="chunked"), b"",
                read_timeout=None)
    with pytest.raises(APIConnectionError) as failure:
        await read_body(body, 64)
    assert KEY not in str(failure.value)


async def test_what_follows_a_chunked_body_is_not_taken_for_the_next_answer():
    connection = ScriptedConnection([chunked(b"abc", [3]) + b"HTTP/1.1 200 OK\r\n"])
    pool = KeepingPool()
    body = Body(connection, pool, head(transfer_encoding="chunked"), b"", read_timeout=None)
    assert await read_body(body, 64) == b"abc"
    assert pool.kept == [] and connection.closed


async def test_connection_close_is_not_kept():
    connection = ScriptedConnection([b"abc"])
    pool = KeepingPool()
    body = Body(connection, pool, head(content_length="3", connection="close"), b"",
                read_timeout=None)
    assert await read_body(body, 64) == b"abc"
    assert pool.kept == [] and connection.closed


# -------------------------------------------------------------------- real sockets

class Server:
    """A server on 127.0.0.1 that answers each request with the next scripted answer: a list
    of byte strings sent one after another (``None``: close the connection; ``"stall"``: send
    nothing more until the client leaves). Keeps every request head it saw."""

    def __init__(self, answers: list[list], *, tls: ssl.SSLContext | None = None) -> None:
        self.answers = deque(answers)
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    async def handle(self, stream) -> None:
        self.connections += 1
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_side=True)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                request, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(request)
                for piece in self.answers.popleft():
                    if piece is None:
                        await stream.aclose()
                        return
                    if piece == "stall":
                        await trio.sleep_forever()
                    await stream.send_all(piece)
                    await trio.sleep(0.001)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def answer(body: bytes, *, status: bytes = b"200 OK", extra: bytes = b"",
           length: bool = True) -> list[bytes]:
    headers = b"HTTP/1.1 " + status + b"\r\n" + extra
    if length:
        return [headers + b"Content-Length: %d\r\n\r\n" % len(body), body]
    return [headers + b"Transfer-Encoding: chunked\r\n\r\n",
            chunked(body, [len(body)] if body else [])]


async def fetch(pool: WirePool, server: Server, *, host: str = "127.0.0.1",
                timeouts: Timeouts = TIMEOUTS) -> bytes:
    origin = Origin("https" if server.tls else "http", host, server.port)
    got_head, body = await pool.request(origin, "GET", b"/v1/files/file-1/content",
                                        [(b"Host", f"{host}:{server.port}".encode())],
                                        timeouts, path="/v1/files/file-1/content")
    assert got_head.status in (200, 206)
    return await read_body(body, 65536)


async def test_a_connection_is_kept_between_requests_and_replaced_once_closed(nursery):
    server = Server([answer(b"one"), answer(b"two", length=False), answer(b"three")])
    await server.serve(nursery)
    pool = WirePool(ssl_context=ssl.create_default_context)
    assert await fetch(pool, server) == b"one"
    assert await fetch(pool, server) == b"two"
    assert pool.opened == 1 and server.connections == 1
    pool.close()
    assert await fetch(pool, server) == b"three"
    assert pool.opened == 2


async def test_a_kept_connection_the_server_closed_is_not_used(nursery):
    server = Server([answer(b"one") + [None], answer(b"two")])
    await server.serve(nursery)
    pool = WirePool(ssl_context=ssl.create_default_context)
    assert await fetch(pool, server) == b"one"
    await trio.sleep(0.05)          # the server's close arrives
    assert await fetch(pool, server) == b"two"
    assert pool.opened == 2


async def test_a_request_a_kept_connection_dropped_unanswered_is_sent_again_once(nursery):
    server = Server([answer(b"one"), [None], answer(b"two")])
    await server.serve(nursery)
    pool = WirePool(ssl_context=ssl.create_default_context)
    assert await fetch(pool, server) == b"one"
    assert await fetch(pool, server) == b"two"
    assert len(server.requests) == 3 and pool.opened == 2


async def test_a_new_connection_dropped_unanswered_is_an_error(nursery):
    server = Server([[None]])
    await server.serve(nursery)
    with pytest.raises(APIConnectionError) as failure:
        await fetch(WirePool(ssl_context=ssl.create_default_context), server)
    assert failure.value.request_sent and "without answering" in failure.value.message


async def test_silence_is_a_timeout_and_a_refused_connection_an_error(nursery):
    server = Server([["stall"], answer(b"0123456789")[:1] + ["stall"]])
    await server.serve(nursery)
    quick = Timeouts(connect=5.0, read=0.2, write=5.0)
    with pytest.raises(APITimeoutError) as failure:
        await fetch(WirePool(ssl_context=ssl.create_default_context), server, timeouts=quick)
    assert failure.value.request_sent and "ReadTimeout" in failure.value.message
    with pytest.raises(APITimeoutError):     # silent in the middle of the body
        await fetch(WirePool(ssl_context=ssl.create_default_context), server, timeouts=quick)
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(APIConnectionError) as refused:
        await WirePool(ssl_context=ssl.create_default_context).request(
            Origin("http", "127.0.0.1", port), "GET", b"/", [(b"Host", b"x")], TIMEOUTS,
            path="/")
    assert not refused.value.request_sent


async def test_an_answer_that_is_not_http_is_a_connection_error(nursery):
    server = Server([[b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]])
    await server.serve(nursery)
    with pytest.raises(APIConnectionError) as failure:
        await fetch(WirePool(ssl_context=ssl.create_default_context), server)
    assert "not valid HTTP/1.1" in failure.value.message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost (made with the openssl command)."""
    # never skipped: .ci/setup --test installs it
    assert shutil.which("openssl"), "the openssl command is missing: apt-get install openssl"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_tls_bodies_are_decrypted_into_the_callers_memory(nursery, certificate):
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    big = os.urandom(3 * 1024 * 1024 + 5)
    server = Server([answer(big, length=False), answer(b"again")], tls=served)
    await server.serve(nursery)
    trusting = WirePool(ssl_context=lambda: ssl.create_default_context(cafile=str(cert)))
    assert await fetch(trusting, server, host="localhost") == big
    assert await fetch(trusting, server, host="localhost") == b"again"
    assert trusting.opened == 1
    with pytest.raises(APIConnectionError) as untrusted:
        await fetch(WirePool(ssl_context=ssl.create_default_context), server, host="localhost")
    assert not untrusted.value.request_sent and "certificate" in untrusted.value.message


# ------------------------------------------------------------------ through FilesClient

async def test_the_client_sends_the_key_range_and_identity_and_falls_back_to_httpx(nursery):
    data = os.urandom(100_000)
    server = Server([
        answer(data[10:], status=b"206 Partial Content",
               extra=b"Content-Range: bytes 10-99999/100000\r\n"),
        # a redirect is followed by httpx: the request is sent again through it
        answer(b"", status=b"302 Found", extra=b"Location: /v1/files/file-2/content\r\n"),
        answer(b"", status=b"302 Found", extra=b"Location: /v1/files/file-2/content\r\n"),
        answer(data, length=False),
        # so is a request whose answer is encoded
        answer(b"compressed?", extra=b"Content-Encoding: gzip\r\n"),
        answer(data),
    ])
    await server.serve(nursery)
    async with FilesClient(api_key=Secret(KEY), base_url=f"http://127.0.0.1:{server.port}/v1",
                           retry=QUICK) as client:
        assert await client.read_content("file-1", offset=10) == data[10:]
        first = server.requests[0].lower()
        assert b"get /v1/files/file-1/content http/1.1" in first
        assert f"authorization: bearer {KEY}".lower().encode() in first
        assert b"range: bytes=10-" in first and b"accept-encoding: identity" in first
        assert await client.read_content("file-1") == data
        assert [request.split(b" ")[1] for request in server.requests[1:4]] == [
            b"/v1/files/file-1/content", b"/v1/files/file-1/content",
            b"/v1/files/file-2/content"]
        assert await client.read_content("file-1") == data
        assert b"accept-encoding: identity" in server.requests[4].lower()
        assert b"accept-encoding: gzip" in server.requests[5].lower()
        assert client.stats.requests["content"] == 5


async def test_error_answers_and_hooks_see_what_httpx_would_show(nursery):
    refused = b'{"error": {"message": "Not allowed to download files of purpose: assistants"}}'
    server = Server([answer(refused, status=b"400 Bad Request"), answer(b"fine")])
    await server.serve(nursery)
    seen = []

    async def hook(response):
        seen.append((response.status_code, response.request.url.path,
                     await response.aread() if response.status_code >= 400 else None))

    from openai_fs.api import DownloadRefusedError
    async with FilesClient(api_key=Secret(KEY), base_url=f"http://127.0.0.1:{server.port}/v1",
                           retry=QUICK, event_hooks={"response": [hook]}) as client:
        with pytest.raises(DownloadRefusedError):
            await client.read_content("file-1")
        assert await client.read_content("file-1") == b"fine"
    assert seen == [(400, "/v1/files/file-1/content", refused),
                    (200, "/v1/files/file-1/content", None)]


def test_a_proxy_in_the_environment_leaves_content_to_httpx(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert not FilesClient(api_key=Secret(KEY)).uses_wire
    assert FilesClient(api_key=Secret(KEY), base_url="https://internal.example/v1").uses_wire
    monkeypatch.delenv("HTTPS_PROXY")
    assert FilesClient(api_key=Secret(KEY)).uses_wire
