"""Shared test fixtures: where the read-only reference data lives, and skipping without it.

The reference data (``../shared`` beside the clone, or ``$DDSP_PD_SHARED``) is not part of the
repository. Without it, the tests that need it skip with one line naming the location, so a fresh
clone still passes its own test command; with ``DDSP_PD_REQUIRE_FIXTURES=1`` (set by ``.ci/run``)
missing fixtures are an error instead, so CI never skips the parity tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
REFERENCE = FIXTURES / "reference" / "solo_ddsp37"
REFERENCE_CHECKPOINT = REFERENCE / "checkpoint"
VST_REFERENCE = FIXTURES / "reference" / "vst_ddsp37"
REAL = FIXTURES / "real"
AUDIO = FIXTURES / "audio"

#: True when the reference fixtures are present (their index is the one file every use needs).
HAVE_FIXTURES = (REFERENCE / "index.json").is_file() and AUDIO.is_dir()
MISSING_REASON = f"reference fixtures not found at {FIXTURES} (set DDSP_PD_SHARED)"
REQUIRE_FIXTURES = os.environ.get("DDSP_PD_REQUIRE_FIXTURES", "0") == "1"

#: Mark for tests (or ``pytestmark`` for modules) that read ``../shared/fixtures``.
needs_fixtures = pytest.mark.skipif(not HAVE_FIXTURES, reason=MISSING_REASON)


def require_fixtures() -> None:
    """Skip the calling test module when the fixtures are absent (call before reading them)."""
    if not HAVE_FIXTURES:
        pytest.skip(MISSING_REASON, allow_module_level=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_FIXTURES and not HAVE_FIXTURES:
        raise pytest.UsageError(f"DDSP_PD_REQUIRE_FIXTURES=1 but {MISSING_REASON}")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not HAVE_FIXTURES:
        pytest.skip(MISSING_REASON)
    return FIXTURES


def reference_index(reference: Path = REFERENCE) -> dict:
    """A reference folder's ``index.json``, or ``{}`` when the fixtures are absent."""
    path = reference / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def fixture_params(values: Iterable[object]) -> list[object]:
    """Parameters read from the fixtures, or one placeholder that skips saying why."""
    values = list(values)
    if values or HAVE_FIXTURES:
        return values
    return [pytest.param(None, marks=needs_fixtures, id="no-fixtures")]
