"""A version published on the shared ledger is current for every replica at once.

The current-version pointer lives in the ledger's database: publishing moves it in one
transaction, so the next query on any replica reads the new version, with no replica
left answering on the old one. The store's CURRENT file is only a copy: a stale one does
not move a replica back. Two replicas per backend, on their own copy of the small dataset.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate import Client, count
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.store import CURRENT_FILE, DatasetStore, DatasetVersion
from tests.support.replicas import Replicas, start_replicas


@pytest.fixture(params=["postgresql", "sqlite"])
def own_replicas(
    request: pytest.FixtureRequest, small_dataset: DatasetVersion, tmp_path: Path
) -> Iterator[Replicas]:
    store_root = tmp_path / "store"
    shutil.copytree(small_dataset.path.parents[2], store_root)
    dataset_id = small_dataset.dataset_id
    if request.param == "sqlite":
        with start_replicas(
            2, str(tmp_path / "ledger.sqlite"), store_root, tmp_path, dataset_id
        ) as group:
            yield group
        return
    databases = request.getfixturevalue("postgres_ledger_databases")
    location = databases.take()
    try:
        with start_replicas(2, location, store_root, tmp_path, dataset_id) as group:
            yield group
    finally:
        databases.give_back(location)


def republish(store: DatasetStore, dataset_id: str) -> str:
    """Publish the current version's files again as a new version; its name."""
    source = store.current(dataset_id)
    builder = store.begin_version(source.metadata)
    for path in source.appointment_paths():
        shutil.copyfile(path, builder.appointments_path(path.stem))
    for record in source.manifest.public_files:
        shutil.copyfile(
            source.path / record.path, builder.public_table_path(Path(record.path).stem)
        )
    with store.building(dataset_id):
        return store.publish(
            builder, source.manifest.bound, {"republished": source.version}
        ).version


@pytest.mark.timeout(300)
def test_a_new_version_is_current_for_every_replica_at_once(own_replicas: Replicas) -> None:
    replicas = own_replicas
    _, token = replicas.new_analyst(5, "reader")
    clients = [Client(target, token=token, retries=0) for target in replicas.targets]

    def versions_answered(epsilon: str) -> list[str]:
        query = count(replicas.dataset_id).by("sex").epsilon(Decimal(epsilon))
        return [client.query(query).dataset_version for client in clients]

    try:
        assert versions_answered("0.1") == ["v000001", "v000001"]
        with Ledger.open(replicas.ledger_location) as ledger:
            store = DatasetStore(replicas.store_root, pointer=ledger)
            assert republish(store, replicas.dataset_id) == "v000002"
            assert ledger.current_version(replicas.dataset_id) == "v000002"
        # A stale copy of the pointer in the store does not move any replica back.
        (replicas.store_root / replicas.dataset_id / CURRENT_FILE).write_text("v000001")
        assert versions_answered("0.2") == ["v000002", "v000002"]  # at once, on both
        for client in clients:  # the catalogue says so too
            listed = {d.dataset_id: d.version for d in client.datasets()}
            assert listed[replicas.dataset_id] == "v000002"
    finally:
        for client in clients:
            client.close()
