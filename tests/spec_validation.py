"""Check emulator responses against the OpenAPI description in ``tests/data/openai-files-openapi.yaml``.

``SpecValidator.validate(method, path, status, headers, body)`` raises ``SpecViolation`` when a
response does not match:

- every response carries ``x-request-id: req_<32 hex>``;
- an error (status >= 400) is ``application/json`` and matches ``ErrorResponse``;
- ``GET /files/{file_id}/content`` (200/206) is checked on status and headers only: its body is
  the raw bytes (the spec's ``application/json`` string is wrong there, see NOTES.md), so it must
  be ``application/octet-stream``, framed by a ``Content-Length`` or (a 200, as the real service
  sends it) ``Transfer-Encoding: chunked``, and a 206 needs a ``Content-Range`` that fits its
  ``Content-Length``;
- any other response must be a documented status of a documented operation, ``application/json``,
  and its body must match the documented schema.

Responses that an injected ``malformed``, ``truncate``, ``die`` or ``stall`` fault broke on purpose
(header ``x-emulator-fault``) are checked on the request id only, and their body is left for the
client to read (and fail on).

The hooks make every response a client sees go through the validator: ``httpx_hook`` for
``httpx.Client``, ``async_httpx_hook`` for ``httpx.AsyncClient``, and ``sdk_http_client()`` builds
the ``httpx2.Client`` that the ``openai`` SDK (3.x, built on httpx2) takes as ``http_client=``.
Violations are raised at once and also kept in ``ResponseChecker.violations``, so a fixture can
fail a test at teardown even if the code under test swallowed the exception.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "data" / "openai-files-openapi.yaml"
SPEC_URI = "urn:openai-files-openapi"
API_PREFIX = "/v1"
REQUEST_ID_RE = re.compile(r"^req_[0-9a-f]{32}$")
CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
CONTENT_TEMPLATE = "/files/{file_id}/content"
FAULT_HEADER = "x-emulator-fault"
UNCHECKED_FAULTS = {"malformed", "truncate", "die", "stall"}


class SpecViolation(AssertionError):
    pass


def patch_spec(spec: dict) -> dict:
    """The two narrow corrections to the spec (see ``spec/NOTES.md``), applied to a copy."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    # 1. An empty listing has no first or last object: its first_id/last_id are null, although
    #    the spec types them plain `string` (NOTES.md: "on an empty list they are probably null").
    for key in ("first_id", "last_id"):
        schemas["ListFilesResponse"]["properties"][key]["type"] = ["string", "null"]
    # 2. `evals` files can be uploaded (CreateFileRequest.purpose) but OpenAIFile.purpose forgot
    #    it, so every listing of an evals file would be "invalid" (NOTES.md, "Mismatch").
    schemas["OpenAIFile"]["properties"]["purpose"]["enum"].append("evals")
    return spec


@lru_cache(maxsize=None)
def load_spec(path: Path = SPEC_PATH) -> dict:
    return patch_spec(yaml.safe_load(path.read_text()))


def _template_re(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class SpecValidator:
    def __init__(self, spec: dict | None = None, prefix: str = API_PREFIX) -> None:
        self.spec = spec if spec is not None else load_spec()
        self.prefix = prefix
        registry = Registry().with_resource(SPEC_URI, Resource.from_contents(self.spec, DRAFT202012))
        self._registry = registry
        self._validators: dict[str, Draft202012Validator] = {}
        self._paths = [(template, _template_re(template), ops) for template, ops in self.spec["paths"].items()]

    def _validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            self._validators[ref] = Draft202012Validator({"$ref": SPEC_URI + ref}, registry=self._registry)
        return self._validators[ref]

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        """The spec's path template and operation for a request, or None."""
        if not path.startswith(self.prefix + "/"):
            return None
        rel = path[len(self.prefix):]
        for template, pattern, ops in self._paths:
            if pattern.match(rel):
                op = ops.get(method.lower())
                return (template, op) if op is not None else None
        return None

    def check_body(self, ref: str, data: Any) -> list[str]:
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in self._validator(ref).iter_errors(data)]

    def validate(self, method: str, path: str, status: int, headers: Mapping[str, str],
                 body: bytes | None) -> None:
        """Raise SpecViolation if the response does not follow the spec. ``body`` may be None
        when it was not read (content, HEAD)."""
        where = f"{method} {path} -> {status}"
        headers = {k.lower(): v for k, v in headers.items()}

        def fail(problem: str) -> None:
            raise SpecViolation(f"{where}: {problem}")

        request_id = headers.get("x-request-id", "")
        if not REQUEST_ID_RE.match(request_id):
            fail(f"x-request-id {request_id!r} is not req_<32 hex>")
        if headers.get(FAULT_HEADER) in UNCHECKED_FAULTS:
            return
        if method == "HEAD":
            body = None
        if status >= 400:
            self._check_json(fail, headers, body, "#/components/schemas/ErrorResponse")
            return
        found = self.operation(method if method != "HEAD" else "GET", path)
        if found is None:
            fail("no such operation in the spec")
        template, op = found
        if template == CONTENT_TEMPLATE:
            self._check_content(fail, status, headers)
            return
        documented = op.get("responses", {}).get(str(status))
        if documented is None:
            fail(f"status {status} is not documented for {template}")
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            fail("the spec documents no JSON body for this response")
        ref = schema.get("$ref")
        if ref is None or not ref.startswith("#"):
            fail(f"unexpected schema in the spec: {schema!r}")
        self._check_json(fail, headers, body, ref)

    def _check_json(self, fail, headers: dict, body: bytes | None, ref: str) -> None:
        ctype = headers.get("content-type", "")
        if ctype.split(";")[0].strip() != "application/json":
            fail(f"content-type is {ctype!r}, not application/json")
        if body is None:
            return
        try:
            data = json.loads(body)
        except ValueError as exc:
            fail(f"body is not JSON ({exc}): {body[:200]!r}")
        problems = self.check_body(ref, data)
        if problems:
            fail(f"body does not match {ref.rsplit('/', 1)[-1]}: " + "; ".join(problems))

    @staticmethod
    def _check_content(fail, status: int, headers: dict) -> None:
        if status not in (200, 206):
            fail("content must answer 200 or 206")
        if headers.get("content-type", "").split(";")[0].strip() != "application/octet-stream":
            fail(f"content-type is {headers.get('content-type')!r}, not application/octet-stream")
        length = headers.get("content-length", "")
        chunked = "content-length" not in headers and headers.get("transfer-encoding", "").lower() == "chunked"
        if not length.isdigit() and not (status == 200 and chunked):
            fail(f"missing or bad content-length {length!r}")
        if status == 206:
            m = CONTENT_RANGE_RE.match(headers.get("content-range", ""))
            if m is None:
                fail(f"206 with bad content-range {headers.get('content-range')!r}")
            first, last, total = map(int, m.groups())
            if not first <= last < total or last - first + 1 != int(length):
                fail(f"content-range {headers['content-range']!r} does not fit content-length {length}")


@lru_cache(maxsize=None)
def default_validator() -> SpecValidator:
    return SpecValidator()


def _needs_body(response: Any) -> bool:
    """Read the body only where it is validated: not content bytes, not a broken body."""
    if response.request.method == "HEAD" or response.headers.get(FAULT_HEADER) in UNCHECKED_FAULTS:
        return False
    return response.status_code >= 400 or not response.request.url.path.endswith("/content")


class ResponseChecker:
    """Validates responses seen by HTTP clients; keeps every violation it raised."""

    def __init__(self, validator: SpecValidator | None = None, prefix: str = API_PREFIX) -> None:
        self.validator = validator or default_validator()
        self.prefix = prefix
        self.violations: list[str] = []
        self.checked = 0

    def _applies(self, response: Any) -> bool:
        path = response.request.url.path
        return path == self.prefix or path.startswith(self.prefix + "/")

    def check(self, response: Any, body: bytes | None) -> None:
        self.checked += 1
        try:
            self.validator.validate(response.request.method, response.request.url.path,
                                    response.status_code, response.headers, body)
        except SpecViolation as exc:
            self.violations.append(str(exc))
            raise

    def assert_clean(self) -> None:
        if self.violations:
            raise SpecViolation("responses did not follow the spec:\n" + "\n".join(self.violations))

    # hooks
    def sync_hook(self, response: Any) -> None:
        """Response hook for ``httpx.Client`` and ``httpx2.Client``."""
        if self._applies(response):
            self.check(response, response.read() if _needs_body(response) else None)

    async def async_hook(self, response: Any) -> None:
        """Response hook for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``."""
        if self._applies(response):
            self.check(response, await response.aread() if _needs_body(response) else None)


def httpx_hook(checker: ResponseChecker | None = None):
    """``httpx.Client(event_hooks={"response": [httpx_hook(checker)]})``."""
    return (checker or ResponseChecker()).sync_hook


def async_httpx_hook(checker: ResponseChecker | None = None):
    """``httpx.AsyncClient(event_hooks={"response": [async_httpx_hook(checker)]})``."""
    return (checker or ResponseChecker()).async_hook


def sdk_http_client(checker: ResponseChecker | None = None, **kwargs: Any):
    """An ``httpx2.Client`` with the SDK's defaults and the validating hook, for
    ``OpenAI(http_client=...)``."""
    import openai

    return openai.DefaultHttpxClient(event_hooks={"response": [httpx_hook(checker)]}, **kwargs)


def async_sdk_http_client(checker: ResponseChecker | None = None, **kwargs: Any):
    """The same for ``AsyncOpenAI(http_client=...)``."""
    import openai

    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [async_httpx_hook(checker)]}, **kwargs)
