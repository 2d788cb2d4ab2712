"""The HTTP stack tuning still applies to the pinned httpx/httpcore (see api/tuning.py)."""

import httpcore
from httpx import _multipart

from openai_fs.api import FilesClient, tuning  # noqa: F401 - importing the client applies it


def test_the_tuned_attributes_exist_and_are_raised():
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == tuning.READ_SIZE
    assert _multipart.FileField.CHUNK_SIZE == tuning.UPLOAD_CHUNK
