"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpgate_server.store.store import DatasetVersion
from dpgate_server.synthetic.generator import ensure_demo_dataset

SMALL_DATASET_PRACTICES = 10
SMALL_DATASET_SEED = 7


@pytest.fixture(scope="session")
def small_dataset_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store root, key file) of the session's small synthetic dataset; the key is outside."""
    base = tmp_path_factory.mktemp("small_dataset")
    return base / "store", base / "secrets" / "pseudonym.key"


@pytest.fixture(scope="session")
def small_dataset(small_dataset_paths: tuple[Path, Path]) -> DatasetVersion:
    """A published "gp_appointments" version: 10 whole practices (~570k rows), seed 7.

    Generated once per session (~3 s). Treat it as read-only: publish other versions into
    your own store (tmp_path), never into this one.
    """
    store_root, key_file = small_dataset_paths
    return ensure_demo_dataset(
        store_root, key_file, practices=SMALL_DATASET_PRACTICES, seed=SMALL_DATASET_SEED
    )
