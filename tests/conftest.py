"""Fixtures shared by every test: an emulator server for the session, reset before each test,
and a checker that validates HTTP responses against the spec (see ``spec_validation.py``)."""

from __future__ import annotations

import pytest

from openai_fs.emulator.control import EmulatorProcess
from spec_validation import ResponseChecker


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory):
    """One emulator for the whole session (its own data directory). Use ``emulator`` instead,
    which also resets it. It behaves as the real service does (content of assistants,
    user_data, fine-tune and evals refused, bodies chunked, Range ignored), which its reset
    restores; ``emulator.control.use_permissive()`` or ``set_config(honour_range=True)``
    switch one test to a more permissive server when that is what it is about."""
    proc = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "data")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def emulator(emulator_server):
    """The session emulator, reset (no files, uploads, faults, requests; start config) and
    started again if an earlier test stopped it."""
    if not emulator_server.running():
        emulator_server.start()
    emulator_server.control.reset()
    yield emulator_server


@pytest.fixture
def spec_checker():
    """Validates the responses its hooks see; fails the test at teardown if any did not follow
    the spec, even when the code under test swallowed the exception."""
    checker = ResponseChecker()
    yield checker
    checker.assert_clean()
