"""One transfer by a Python HTTP client with no FUSE in the way: the ceiling for a mount.

    OPENAI_BASE_URL=... OPENAI_API_KEY=... python bench/client_alone.py CLIENT download FILE_ID
    OPENAI_BASE_URL=... OPENAI_API_KEY=... python bench/client_alone.py CLIENT upload PATH NAME

CLIENT is ``openai-fs`` (the mount's own client, :class:`openai_fs.api.client.FilesClient`,
with the tuning the mount applies; a download is received as the mount receives one, with
``ContentStream.readinto`` into one reused 1 MiB buffer), ``sdk`` (the official ``openai``
package) or, for a download only, ``raw``: a socket (over TLS for an https URL) that receives
the response into one reused 1 MiB buffer (``recv_into``) and parses nothing, the floor of
receiving the bytes in Python at all. A download
streams ``GET /files/{id}/content`` to nowhere; an upload sends PATH as one ``POST /files``
(purpose ``user_data``, filename NAME). The key comes from the environment, never argv.

Prints one JSON object: ``seconds`` (the transfer alone: imports, start-up and the client's
construction are excluded, so the figure compares with ``curl``'s), ``cpu`` (this process's
CPU seconds over the same span), ``bytes`` and, for an upload, the new file's ``id``.

The benchmark runs this next to ``curl`` and the mount: a mount's transfer passes every byte
through its client, so the mount cannot beat this, and a target this does not reach on a
machine is out of reach for the mount there too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = ("openai-fs", "sdk", "raw")


class Span:
    """Wall and CPU seconds of the code in a ``with`` block."""

    def __enter__(self) -> "Span":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def with_openai_fs(args: argparse.Namespace, base_url: str, key: str) -> dict:
    import trio

    from openai_fs.api.client import FilesClient
    from openai_fs.api.secret import Secret

    async def transfer() -> dict:
        client = FilesClient(api_key=Secret(key), base_url=base_url)
        try:
            if args.action == "download":
                # as the mount receives a download: into memory it hands over (its ring)
                received, view = 0, memoryview(bytearray(1024 * 1024))
                with Span() as span:
                    async with client.open_content(args.target) as content:
                        while count := await content.readinto(view):
                            received += count
                return {"seconds": span.seconds, "cpu": span.cpu, "bytes": received,
                        "wire": client.uses_wire}
            with Span() as span:
                made = await client.create_file(args.name, "user_data", Path(args.target))
            return {"seconds": span.seconds, "cpu": span.cpu, "bytes": made.bytes, "id": made.id}
        finally:
            await client.aclose()

    return trio.run(transfer)


def with_sdk(args: argparse.Namespace, base_url: str, key: str) -> dict:
    import openai

    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        if args.action == "download":
            received = 0
            with Span() as span:
                with client.files.with_streaming_response.content(args.target) as response:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
            return {"seconds": span.seconds, "cpu": span.cpu, "bytes": received}
        with open(args.target, "rb") as body, Span() as span:
            made = client.files.create(file=(args.name, body), purpose="user_data")
        return {"seconds": span.seconds, "cpu": span.cpu, "bytes": made.bytes, "id": made.id}


def with_raw_socket(args: argparse.Namespace, base_url: str, key: str) -> dict:
    import socket
    from urllib.parse import urlsplit

    if args.action != "download":
        raise SystemExit("raw: downloads only")
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https"):
        raise SystemExit("raw: http or https only")
    request = (f"GET {url.path.rstrip('/')}/files/{args.target}/content HTTP/1.1\r\n"
               f"Host: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
               "Connection: close\r\n\r\n").encode()
    buffer = memoryview(bytearray(1024 * 1024))
    received = 0
    port = url.port or (443 if url.scheme == "https" else 80)
    with socket.create_connection((url.hostname, port)) as plain, Span() as span:
        sock = plain
        if url.scheme == "https":
            # the TLS handshake and decryption are part of receiving (SSL_CERT_FILE is honoured)
            import ssl
            sock = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE")).wrap_socket(
                plain, server_hostname=url.hostname)
        sock.sendall(request)
        while count := sock.recv_into(buffer):
            received += count
    # the count includes the status line, headers and any chunk framing (a few KiB)
    return {"seconds": span.seconds, "cpu": span.cpu, "bytes": received}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=CLIENTS)
    actions = parser.add_subparsers(dest="action", required=True)
    download = actions.add_parser("download", help="GET a file's content to nowhere")
    download.add_argument("target", metavar="FILE_ID")
    upload = actions.add_parser("upload", help="POST a local file as one request")
    upload.add_argument("target", metavar="PATH")
    upload.add_argument("name", metavar="NAME")
    args = parser.parse_args(argv)
    base_url, key = os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY")
    if not base_url or not key:
        parser.error("OPENAI_BASE_URL and OPENAI_API_KEY must be set")
    transfer = {"openai-fs": with_openai_fs, "sdk": with_sdk, "raw": with_raw_socket}[args.client]
    print(json.dumps(transfer(args, base_url, key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
