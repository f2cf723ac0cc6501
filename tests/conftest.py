"""Shared test fixtures: where the read-only reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDSP_PD_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
REFERENCE = FIXTURES / "reference" / "solo_ddsp37"
REFERENCE_CHECKPOINT = REFERENCE / "checkpoint"
REAL = FIXTURES / "real"
AUDIO = FIXTURES / "audio"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (set DDSP_PD_SHARED)")
    return FIXTURES
