"""Nothing the engine says before a release depends on the private rows."""

from __future__ import annotations

import re

from dpgate_server.queries import engine
from dpgate_server.queries.model import Aggregate, Query, Spend
from dpgate_server.store.store import DatasetVersion


def test_preview_quotes_no_observed_row_count(small_dataset: DatasetVersion) -> None:
    query = Query(
        small_dataset.dataset_id, Aggregate.count(), group_by=("mode",), spend=Spend.epsilon(1)
    )
    preview = engine.preview(small_dataset, query)
    numbers = {int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", preview.truncation_note)}
    observed = {rec.rows for rec in small_dataset.manifest.appointment_files}
    observed.add(sum(observed))
    observed.update(
        v for v in small_dataset.manifest.source.values() if isinstance(v, int) and v > 100
    )
    assert not numbers & observed
    assert numbers <= {small_dataset.metadata.max_contributions}
