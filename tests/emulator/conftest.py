"""Clients of the emulator for its own tests; every response they see is validated against the spec."""

from __future__ import annotations

import httpx
import openai
import pytest

from spec_validation import sdk_http_client

from .helpers import TEST_API_KEY


@pytest.fixture
def emulator(emulator):
    """The session emulator, permissive for this test (every purpose's content served, Range
    honoured): the emulator's own tests exercise each switch, and ``real_emulator`` switches
    back to the real service's behaviour, the session's start configuration."""
    emulator.control.use_permissive()
    return emulator


@pytest.fixture
def api(emulator, spec_checker):
    """``httpx.Client`` on ``/v1`` of the session emulator, with the test key."""
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                      timeout=60, event_hooks={"response": [spec_checker.sync_hook]}) as client:
        yield client


@pytest.fixture
def real_emulator(emulator):
    """The session emulator behaving like the real service (the default of ``openai-fs serve``
    and the session's start configuration, which the next test's reset restores)."""
    emulator.control.use_real_service_defaults()
    return emulator


@pytest.fixture
def ctl(emulator):
    """The control client of the session emulator."""
    return emulator.control


@pytest.fixture
def sdk(real_emulator, spec_checker):
    """The official SDK pointed at the session emulator, which behaves like the real service."""
    client = openai.OpenAI(base_url=real_emulator.base_url, api_key=TEST_API_KEY,
                           http_client=sdk_http_client(spec_checker))
    yield client
    client.close()
