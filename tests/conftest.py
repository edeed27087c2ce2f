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


@pytest.fixture(autouse=True, scope="session")
def _subprocesses_import_the_tested_package():
    """`python -m pc_ovseg` would put the working directory first on sys.path, so a subprocess
    started from a source checkout would import the unbuilt source tree instead of the installed
    package under test; PYTHONSAFEPATH (Python >= 3.11) leaves the working directory out."""
    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    yield
    if old is None:
        os.environ.pop("PYTHONSAFEPATH", None)
    else:
        os.environ["PYTHONSAFEPATH"] = old


@pytest.fixture(autouse=True, scope="session")
def _user_caches_in_a_temporary_folder(tmp_path_factory):
    """The text-embedding cache (``$PC_OVSEG_CACHE``) of tests never lands in the real home folder."""
    old = os.environ.get("PC_OVSEG_CACHE")
    os.environ["PC_OVSEG_CACHE"] = str(tmp_path_factory.mktemp("pc_ovseg_cache"))
    yield
    if old is None:
        os.environ.pop("PC_OVSEG_CACHE", None)
    else:
        os.environ["PC_OVSEG_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        msg = f"sample data not found at {d} (set PC_OVSEG_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return d
