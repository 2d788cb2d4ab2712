"""Fixtures shared by every test: an emulator server for the session, reset before each test,
and a checker that validates HTTP responses against the spec (see ``spec_validation.py``)."""

from __future__ import annotations

import pytest

from openai_fs.emulator.control import EmulatorProcess
from spec_validation import ResponseChecker


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory):
    """One emulator for the whole session (its own data directory). Use ``emulator`` instead,
    which also resets it. Started permissive (content of every purpose served), which its
    reset restores; ``emulator.control.use_real_service_defaults()`` switches one test to
    the real service's behaviour."""
    # TODO(issue 16): the real-service default once the mount copes
    proc = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "data", permissive=True)
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
