"""``openai-fs serve``: run the emulator of the Files and Uploads API (uvicorn + the ASGI app)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from openai_fs.core.sizes import parse_size
from openai_fs.emulator.app import EmulatorApp
from openai_fs.emulator.config import REAL_DOWNLOADABLE, RuntimeConfig, parse_downloadable
from openai_fs.emulator.faults import FaultRule, parse_spec
from openai_fs.emulator.samples import seed_demo
from openai_fs.emulator.store import Store

DESCRIPTION = """\
Serve a local emulator of the OpenAI Files and Uploads API under /v1, persisting to a data
directory (SQLite metadata and one file per blob), so it survives restarts.

When ready it prints one line to stdout:
  openai-fs emulator listening on http://HOST:PORT/v1

Point a client at it with OPENAI_BASE_URL=http://HOST:PORT/v1 and any OPENAI_API_KEY (or the one
given with --api-key-file).

By default it behaves like the real service where that is stricter than the spec: the content
of assistants, user_data, fine-tune and evals files is refused with 400 "Not allowed to download
files of purpose: P" (--downloadable changes which purposes are served), and content is sent
whole with 200, chunked, with Content-Disposition and without Content-Length or Accept-Ranges,
whatever Range asks (--honour-range answers Range with 206/416 and sends Content-Length).

/_emulator/ (no auth; keep the server on loopback) is a control API for tests: request log,
faults, runtime config (downloadable, honour_range, page_cap, latency, bandwidth), state, the
stored bytes of any file (GET /_emulator/files/{id}/content, whatever its purpose), reset,
clock, seeding, and hostile listing entries (POST /_emulator/listing_extras with a JSON list, or
{"purpose": P, "entries": [...]}: raw values appended unvalidated to every GET /files page, and
answered by GET /files/{id} when their id matches; DELETE clears them).

Fault specs (--fault, repeatable): KIND[:key=value,...] or a JSON object, e.g.
  --fault status:status=429,retry_after=1,count=2
  --fault 'latency:seconds=0.5,path=/content$'
  --fault '{"kind": "drop", "path": "^/v1/files$", "method": "POST", "every": 3}'
A rule matches on method and path (a regex) and is limited by count, every, rate (with seed) and
skip. Kinds and their parameters:
  status               answer an OpenAI error before handling: status (default 500), message,
                       type, code, retry_after, retry_after_ms
  insufficient_quota   429 with type and code insufficient_quota, as the real service answers
                       when the quota is used up (no Retry-After)
  stuck_cursor         GET /files ignores after and answers the first page with has_more true,
                       so a cursor never advances (as broken proxies do)
  latency              sleep seconds before handling
  drop                 close the connection without a response
  die                  the whole process exits at once (status 99), as if killed: after
                       after_bytes bytes of the request body (POST; never answered) or of the
                       response body (others); 0, the default: before handling
  stall                send the headers and after_bytes body bytes, then nothing more, keeping
                       the connection open until the client leaves; 0, the default: answer
                       nothing at all (a server that went silent)
  truncate             send the headers and after_bytes body bytes, then close
  malformed            answer 200 with a body that is not JSON
  drop_after_commit    handle the request, then close without a response
  status_after_commit  handle the request, then answer like status
"""

log = logging.getLogger("openai_fs.emulator")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "openai-fs" / "emulator"


def _bandwidth(text: str) -> float:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the bandwidth must be positive")
    return float(value)


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _downloadable(value: str) -> str | list[str]:
    try:
        return parse_downloadable(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault(value: str) -> dict:
    try:
        spec = parse_spec(value)
        params = dict(spec)
        FaultRule(str(params.pop("kind")), **params)  # validate now, fail at startup
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where files are kept (default: $XDG_DATA_HOME/openai-fs/emulator)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key", metavar="KEY",
                      help="accept only this key (visible in ps; prefer --api-key-file). "
                           "Without a key, any non-empty bearer key is accepted")
    keys.add_argument("--api-key-file", type=Path, metavar="FILE", help="accept only the key in FILE")
    parser.add_argument("--downloadable", type=_downloadable, default=None, metavar="PURPOSES",
                        help="comma-separated purposes whose content GET /files/{id}/content serves; "
                             "the others answer 400 'Not allowed to download files of purpose: P' as the "
                             "real service does; 'all' serves every purpose (default: "
                             f"{','.join(REAL_DOWNLOADABLE)})")
    parser.add_argument("--honour-range", action="store_true",
                        help="honour Range on content (Accept-Ranges, 206, 416) and send a Content-Length "
                             "with every content response; by default, as the real service does, content "
                             "is sent whole with 200 and chunked, without Content-Length or Accept-Ranges")
    parser.add_argument("--page-cap", type=_positive_int, metavar="N",
                        help="return at most N files per listing page, whatever the limit")
    parser.add_argument("--latency", type=_non_negative, default=0.0, metavar="SECONDS",
                        help="delay every /v1 request by this long")
    parser.add_argument("--bandwidth", type=_bandwidth, default=None, metavar="BYTES_PER_S",
                        help="move each request and response body at most this fast (K/M/G "
                             "suffixes), to resemble a real network link; default: no limit")
    parser.add_argument("--fault", type=_fault, action="append", default=[], metavar="SPEC",
                        help="inject a fault (repeatable; see above)")
    parser.add_argument("--seed-demo", action="store_true",
                        help="if the store holds no files, add a few sample files in every purpose")
    parser.add_argument("--access-log", action="store_true", help="log one line per /v1 request")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"],
                        help="log level (default: %(default)s)")


def _read_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is not None:
        key = args.api_key_file.read_text().strip()
        if not key:
            raise SystemExit(f"openai-fs serve: {args.api_key_file} holds no key")
        return key
    if args.api_key is not None:
        if not args.api_key.strip():
            raise SystemExit("openai-fs serve: --api-key is empty")
        return args.api_key.strip()
    return None


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"openai-fs emulator listening on {self.url}", flush=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = _read_key(args)
    data_dir = args.data_dir or default_data_dir()
    store = Store(data_dir)
    if args.seed_demo and store.live_file_count() == 0:
        seeded = seed_demo(store)
        log.info("seeded %d demo files", len(seeded))
    runtime = RuntimeConfig(honour_range=args.honour_range, page_cap=args.page_cap, latency=args.latency,
                            bandwidth=args.bandwidth)
    if args.downloadable is not None:
        runtime.downloadable = args.downloadable
    app = EmulatorApp(store, api_key=api_key, faults=args.fault, log_access=args.access_log, config=runtime)
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        store.close()
        print(f"openai-fs serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=5)
    server = _Server(config, f"http://{url_host}:{port}/v1")
    # uvicorn re-raises the signal that stopped it once it has shut down; let that be a no-op so
    # that the store is closed and the exit status is 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.close()
        store.close()
    log.info("emulator stopped")
    return 0
