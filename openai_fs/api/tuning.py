"""Two settings of the HTTP stack that it offers no option for, raised for bulk transfers.

Both are class attributes of the pinned httpx/httpcore versions; tests/api/test_tuning.py
fails if an upgrade renames them, so a silent loss of the tuning cannot go unnoticed.

* httpcore reads the socket 64 KiB at a time, so a body costs one trip through the HTTP
  parser (and through the mount's loop) per 64 KiB. (Content bodies no longer go through
  httpcore unless a proxy is set or the answer is one openai_fs.api.wire does not read; this
  now serves listings, uploads' answers and those downloads.) 256 KiB halved the CPU a download takes
  (measured: 1 GiB over loopback, 0.94 s -> 0.44 s); 1 MiB cut the mount's user CPU for a cold
  1 GiB read through it by another third (0.52-0.60 s -> 0.31-0.42 s). A read returns what
  the socket holds, so on a slow link the pieces stay small.
* httpx reads a multipart file field 64 KiB at a time, so an upload costs one socket write and
  one trip through the event loop per 64 KiB. 1 MiB pieces cut that by 16.
"""

from __future__ import annotations

import httpcore
from httpx import _multipart

READ_SIZE = 1024 * 1024
UPLOAD_CHUNK = 1024 * 1024


def apply() -> None:
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE
    _multipart.FileField.CHUNK_SIZE = UPLOAD_CHUNK
