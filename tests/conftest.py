"""Shared fixtures: the sample phantoms (generated once into the cache, then reused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scrubin.samples.phantom import ensure_sample, load_truth


@pytest.fixture(scope="session")
def small_phantom() -> Path:
    """Folder of the small axial head-CT phantom series (DICOM files + truth.json)."""
    return ensure_sample("small")


@pytest.fixture(scope="session")
def oblique_phantom() -> Path:
    """Folder of the small double-oblique, non-square-pixel phantom series."""
    return ensure_sample("small-oblique")


@pytest.fixture(scope="session")
def small_truth(small_phantom: Path) -> dict:
    """Ground truth (LPS mm) of the small phantom."""
    return load_truth(small_phantom)


@pytest.fixture(scope="session")
def oblique_truth(oblique_phantom: Path) -> dict:
    """Ground truth (LPS mm) of the oblique phantom."""
    return load_truth(oblique_phantom)
