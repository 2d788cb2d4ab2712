"""The spec validator itself: it must reject what the spec forbids (else the other tests prove nothing)."""

from __future__ import annotations

import json

import pytest
import yaml

from spec_validation import SPEC_PATH, SpecValidator, SpecViolation, default_validator, load_spec

RID = {"x-request-id": "req_" + "0" * 32}
JSON = {**RID, "content-type": "application/json"}
FILE = {"id": "file-abc", "object": "file", "bytes": 3, "created_at": 1, "filename": "a", "purpose": "user_data",
        "status": "processed"}


def check(method, path, status, headers, body):
    default_validator().validate(method, path, status, headers,
                                 body if body is None or isinstance(body, bytes) else json.dumps(body).encode())


def test_valid_responses_pass():
    check("GET", "/v1/files/file-abc", 200, JSON, FILE)
    check("GET", "/v1/files", 200, JSON, {"object": "list", "data": [FILE], "first_id": "file-abc",
                                          "last_id": "file-abc", "has_more": False})
    check("DELETE", "/v1/files/file-abc", 200, JSON, {"id": "file-abc", "object": "file", "deleted": True})
    check("POST", "/v1/uploads/upload_x/parts", 200, JSON,
          {"id": "part_x", "object": "upload.part", "created_at": 1, "upload_id": "upload_x"})
    check("GET", "/v1/files/file-abc/content", 200,
          {**RID, "content-type": "application/octet-stream", "transfer-encoding": "chunked",
           "content-disposition": 'attachment; filename="a"'}, None)
    check("GET", "/v1/files/file-abc/content", 206,
          {**RID, "content-type": "application/octet-stream", "content-length": "2", "content-range": "bytes 0-1/3"},
          None)
    check("GET", "/v1/nowhere", 404, JSON, {"error": {"message": "m", "type": "t", "param": None, "code": None}})


def test_the_two_patches():
    # an empty list has null ids; evals is a purpose
    check("GET", "/v1/files", 200, JSON, {"object": "list", "data": [], "first_id": None, "last_id": None,
                                          "has_more": False})
    check("GET", "/v1/files/file-abc", 200, JSON, {**FILE, "purpose": "evals"})
    raw = SpecValidator(spec=yaml.safe_load(SPEC_PATH.read_text()))  # unpatched: evals is refused
    with pytest.raises(SpecViolation):
        raw.validate("GET", "/v1/files/file-abc", 200, JSON, json.dumps({**FILE, "purpose": "evals"}).encode())
    assert "evals" in load_spec()["components"]["schemas"]["OpenAIFile"]["properties"]["purpose"]["enum"]


@pytest.mark.parametrize("method, path, status, headers, body", [
    ("GET", "/v1/files/file-abc", 200, JSON, {**FILE, "object": "files"}),
    ("GET", "/v1/files/file-abc", 200, JSON, {k: v for k, v in FILE.items() if k != "status"}),
    ("GET", "/v1/files/file-abc", 200, JSON, {**FILE, "status_details": None}),
    ("GET", "/v1/files/file-abc", 200, JSON, {**FILE, "bytes": "3"}),
    ("GET", "/v1/files/file-abc", 200, JSON, {**FILE, "purpose": "fun"}),
    ("GET", "/v1/files/file-abc", 200, {"x-request-id": "abc", "content-type": "application/json"}, FILE),
    ("GET", "/v1/files/file-abc", 200, RID, FILE),
    ("GET", "/v1/files/file-abc", 200, JSON, b"{not json"),
    ("GET", "/v1/files", 200, JSON, {"object": "list", "data": [FILE], "first_id": "f", "last_id": "f"}),
    ("DELETE", "/v1/files/file-abc", 200, JSON, {"id": "file-abc", "object": "file", "deleted": "yes"}),
    ("PUT", "/v1/files", 200, JSON, FILE),
    ("GET", "/v1/files/file-abc", 201, JSON, FILE),
    ("POST", "/v1/uploads", 200, JSON, {"id": "upload_x", "object": "upload", "status": "waiting", "bytes": 1,
                                        "created_at": 1, "expires_at": 2, "filename": "f", "purpose": "p"}),
    ("GET", "/v1/nowhere", 404, JSON, {"error": {"message": "m", "type": "t", "param": None}}),
    ("GET", "/v1/nowhere", 404, JSON, {"message": "m"}),
    ("GET", "/v1/files/file-abc/content", 200, {**RID, "content-type": "application/json", "content-length": "3"},
     None),
    ("GET", "/v1/files/file-abc/content", 200, {**RID, "content-type": "application/octet-stream"}, None),
    ("GET", "/v1/files/file-abc/content", 206,
     {**RID, "content-type": "application/octet-stream", "transfer-encoding": "chunked",
      "content-range": "bytes 0-1/3"}, None),
    ("GET", "/v1/files/file-abc/content", 200,
     {**RID, "content-type": "application/octet-stream", "transfer-encoding": "gzip"}, None),
    ("GET", "/v1/files/file-abc/content", 206,
     {**RID, "content-type": "application/octet-stream", "content-length": "3", "content-range": "bytes 0-1/3"}, None),
    ("GET", "/v1/files/file-abc/content", 206,
     {**RID, "content-type": "application/octet-stream", "content-length": "2", "content-range": "0-1/3"}, None),
])
def test_violations_are_caught(method, path, status, headers, body):
    with pytest.raises(SpecViolation):
        check(method, path, status, headers, body)
