"""Shared test helpers: where the real sample data lives.

Tests read ../shared/data (beside the project root) or $PC_OVSEG_SHARED_DATA. Under CI=true a
missing data folder is a failure, not a skip: the tests exist to run on real data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("PC_OVSEG_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        msg = f"sample data not found at {d} (set PC_OVSEG_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return d
