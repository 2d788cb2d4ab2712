"""Fault injection rules: which requests a fault hits, and what it does.

A rule matches a request on ``method`` (optional, case-insensitive) and ``path`` (optional regex,
``re.search`` on the URL path such as ``/v1/files/file-x/content``). Of the matches, it skips the
first ``skip``, then fires on every ``every``-th one (if given), with probability ``rate`` (a
``random.Random(seed)``, so runs repeat), until it has fired ``count`` times (if given). With
none of ``count``/``every``/``rate`` it fires on every match.

Rules are tried in the order they were added. ``latency`` rules that fire add their delay and the
search goes on; the first other rule that fires decides the outcome, and later rules are not
tried (so they neither count that request nor fire on it).

Kinds and their parameters:

=======================  ===========================================================================
``status``               answer ``status`` (default 500) with an OpenAI error body before handling;
                         ``message``, ``type`` and ``code`` set the body's fields (the defaults fit
                         the status: 429 has type ``requests`` and code ``rate_limit_exceeded``);
                         for 429: ``retry_after`` (seconds, sent as ``Retry-After``) and/or
                         ``retry_after_ms`` (sent as ``retry-after-ms``)
``insufficient_quota``   answer 429 as the real service does when the quota is used up: type and
                         code ``insufficient_quota``, its message, no ``Retry-After`` (billing,
                         not rate: retrying cannot help)
``stuck_cursor``         ``GET /files`` ignores ``after`` and answers the first page with
                         ``has_more: true``, so a cursor never advances (as broken proxies do); it
                         matches no other request
``latency``              sleep ``seconds`` before handling
``drop``                 close the connection before handling, without any response
``die``                  the whole emulator process exits at once (``os._exit``, status
                         ``DIE_EXIT_STATUS``), as if killed: for a request with a body (POST)
                         once ``after_bytes`` (default 0) bytes of it have arrived, or when it is
                         complete, and before any answer; for other requests after
                         ``after_bytes`` bytes of the response body (0: before handling), or at
                         its end. Clients see a reset connection, then refused ones
``stall``                handle, send the headers and ``after_bytes`` body bytes, then send
                         nothing more and keep the connection open until the client goes away; with
                         ``after_bytes`` 0 (the default) nothing is handled or answered at all: a
                         server that went silent
``truncate``             handle, send the headers and ``after_bytes`` (default 0) body bytes, then
                         close
``malformed``            answer 200 with a body that is not valid JSON, without handling
``drop_after_commit``    handle fully (e.g. create the file), then close without a response
``status_after_commit``  handle fully, then answer ``status`` like ``status`` does
=======================  ===========================================================================

On the command line (``--fault``) a rule is ``KIND[:key=value,...]``, e.g.
``status:status=429,retry_after=1,count=2,path=^/v1/files$``, or a JSON object for values that
contain commas.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from typing import Any, Callable

from openai_fs.emulator import errors

KINDS = ("status", "insufficient_quota", "stuck_cursor", "latency", "drop", "die", "stall", "truncate",
         "malformed", "drop_after_commit", "status_after_commit")
#: Exit status of an emulator that a ``die`` fault ended.
DIE_EXIT_STATUS = 99
#: Kinds that answer an OpenAI error body with ``FaultRule.status``.
STATUS_KINDS = frozenset({"status", "status_after_commit", "insufficient_quota"})

#: Parameters every rule takes, with their converters.
_MATCH_PARAMS: dict[str, Callable[[Any], Any]] = {
    "method": lambda v: str(v).upper(),
    "path": str,
    "count": int,
    "every": int,
    "rate": float,
    "seed": int,
    "skip": int,
}
#: Parameters only some kinds take.
_KIND_PARAMS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "status": {"status": int, "message": str, "type": str, "code": str, "retry_after": float,
               "retry_after_ms": float},
    "latency": {"seconds": float},
    "truncate": {"after_bytes": int},
    "die": {"after_bytes": int},
    "stall": {"after_bytes": int},
}
_KIND_PARAMS["status_after_commit"] = _KIND_PARAMS["status"]
#: Kinds that only ever match one operation: (method, path).
_ONLY_MATCHES: dict[str, tuple[str, str]] = {"stuck_cursor": ("GET", "/v1/files")}

_ids = itertools.count(1)


class FaultRule:
    def __init__(self, kind: str, **params: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        allowed = {**_MATCH_PARAMS, **_KIND_PARAMS.get(kind, {})}
        values: dict[str, Any] = {}
        for name, value in params.items():
            if name not in allowed:
                raise ValueError(f"fault kind {kind!r} takes no parameter {name!r}")
            if value is None:
                continue
            try:
                values[name] = allowed[name](value)
            except (TypeError, ValueError):
                raise ValueError(f"bad value for fault parameter {name!r}: {value!r}") from None
        self.id = f"fault_{next(_ids)}"
        self.kind = kind
        self.method: str | None = values.get("method")
        self.path: str | None = values.get("path")
        try:
            self._path_re = re.compile(self.path) if self.path is not None else None
        except re.error as exc:
            raise ValueError(f"bad path regex {self.path!r}: {exc}") from None
        self.count: int | None = values.get("count")
        self.every: int | None = values.get("every")
        self.rate: float | None = values.get("rate")
        self.seed: int = values.get("seed", 0)
        self.skip: int = values.get("skip", 0)
        for name in ("count", "every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"fault parameter {name!r} must be at least 1")
        if self.skip < 0:
            raise ValueError("fault parameter 'skip' must not be negative")
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError("fault parameter 'rate' must lie between 0 and 1")
        self._rng = random.Random(self.seed)
        self.status: int | None = None
        if kind in STATUS_KINDS:
            self.status = values.get("status", 500)
            if not 100 <= self.status <= 599:
                raise ValueError("fault parameter 'status' must be an HTTP status code")
        self.message: str | None = values.get("message")
        self.type: str | None = values.get("type")
        self.code: str | None = values.get("code")
        if kind == "insufficient_quota":
            self.status = 429
            self.message = errors.INSUFFICIENT_QUOTA_MESSAGE
            self.type = self.code = "insufficient_quota"
        self.retry_after: float | None = values.get("retry_after")
        self.retry_after_ms: float | None = values.get("retry_after_ms")
        self.seconds: float = values.get("seconds", 0.0)
        if kind == "latency" and "seconds" not in values:
            raise ValueError("a latency fault needs 'seconds'")
        if self.seconds < 0:
            raise ValueError("fault parameter 'seconds' must not be negative")
        self.after_bytes: int = values.get("after_bytes", 0)
        if self.after_bytes < 0:
            raise ValueError("fault parameter 'after_bytes' must not be negative")
        self._given = {k: v for k, v in values.items()}
        self.matched = 0
        self.applied = 0

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count

    def matches(self, method: str, path: str) -> bool:
        if self.kind in _ONLY_MATCHES and _ONLY_MATCHES[self.kind] != (method.upper(), path):
            return False
        if self.method is not None and self.method != method.upper():
            return False
        return self._path_re is None or self._path_re.search(path) is not None

    def fire(self) -> bool:
        """Count one matching request; True when the fault applies to it."""
        if self.exhausted:
            return False
        self.matched += 1
        n = self.matched - self.skip
        if n <= 0:
            return False
        if self.every is not None and n % self.every:
            return False
        if self.rate is not None and self._rng.random() >= self.rate:
            return False
        self.applied += 1
        return True

    def retry_headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = _number(self.retry_after_ms)
        return headers

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, **self._given, "matched": self.matched,
                "applied": self.applied,
                "remaining": None if self.count is None else self.count - self.applied}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class FaultSet:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def add(self, kind: str, **params: Any) -> FaultRule:
        rule = FaultRule(kind, **params)
        self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules.clear()

    def list(self) -> list[dict]:
        return [r.to_dict() for r in self._rules]

    def select(self, method: str, path: str) -> tuple[float, FaultRule | None, list[FaultRule]]:
        """For one request: the total injected latency, the rule deciding the outcome (or None)
        and every rule that fired."""
        delay = 0.0
        fired: list[FaultRule] = []
        for rule in self._rules:
            if not rule.matches(method, path) or not rule.fire():
                continue
            fired.append(rule)
            if rule.kind == "latency":
                delay += rule.seconds
            else:
                return delay, rule, fired
        return delay, None, fired


def parse_spec(spec: str) -> dict:
    """A ``--fault`` value: ``KIND[:key=value,...]`` or a JSON object with a ``kind``."""
    spec = spec.strip()
    if spec.startswith("{"):
        data = json.loads(spec)
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError("a JSON fault spec must be an object with a 'kind'")
        return data
    kind, _, rest = spec.partition(":")
    data: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"fault parameter {item!r} is not key=value")
        data[key.strip()] = value.strip()
    return data
