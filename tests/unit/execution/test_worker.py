"""The worker's job handling, run in this process (no spawning): replies for each outcome."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from dpgate_server.execution.messages import (
    Done,
    Failed,
    Probe,
    QueryJob,
    Refused,
    rebuild_error,
)
from dpgate_server.execution.worker import answer
from dpgate_server.queries import engine
from dpgate_server.queries.errors import EngineError
from dpgate_server.queries.model import Aggregate, Query, Release, Spend
from dpgate_server.store.store import DatasetStore, DatasetVersion

_NO_STORE = DatasetStore(Path(os.devnull))
"""Probes read no data."""


def _store(version: DatasetVersion) -> DatasetStore:
    return DatasetStore(version.path.parents[2])  # <root>/<dataset>/versions/<version>


def _count_by_mode(dataset_id: str) -> Query:
    return Query(dataset_id, Aggregate.count(), group_by=("mode",), spend=Spend.epsilon(1))


def _job(version: DatasetVersion, query: Query) -> QueryJob:
    return QueryJob(engine.prepare(version, query))


def test_query_job_answers_release_bytes_of_its_version(small_dataset: DatasetVersion) -> None:
    job = _job(small_dataset, _count_by_mode(small_dataset.dataset_id))
    reply = answer(_store(small_dataset), job)
    assert isinstance(reply, Done)
    release = Release.from_bytes(reply.payload)
    assert release.key == job.prepared.key
    assert release.dataset_version == small_dataset.version


def test_query_job_runs_as_prepared_without_preparing_again(
    small_dataset: DatasetVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(small_dataset, _count_by_mode(small_dataset.dataset_id))

    def prepare_again(*args: object, **kwargs: object) -> engine.PreparedQuery:
        raise AssertionError("the worker prepared the query a second time")

    monkeypatch.setattr(engine, "prepare", prepare_again)
    reply = answer(_store(small_dataset), job)
    assert isinstance(reply, Done)
    release = Release.from_bytes(reply.payload)
    assert (release.key, release.cost_units) == (job.prepared.key, job.prepared.cost_units)


def test_engine_refusal_is_refused_as_itself(small_dataset: DatasetVersion) -> None:
    prepared = engine.prepare(small_dataset, _count_by_mode(small_dataset.dataset_id))
    scale = prepared.calibration.noise_scale
    rescaled = dataclasses.replace(
        prepared,
        calibration=dataclasses.replace(
            prepared.calibration, global_scale=prepared.calibration.global_scale * 2
        ),
    )
    reply = answer(_store(small_dataset), QueryJob(rescaled))
    assert isinstance(reply, Refused)
    error = rebuild_error(reply)
    assert isinstance(error, EngineError)
    assert repr(scale) in str(error)


def test_unexpected_error_is_failed_with_traceback_and_not_fatal() -> None:
    reply = answer(_NO_STORE, Probe(fail_with="secret detail"))
    assert isinstance(reply, Failed)
    assert reply.type_name == "RuntimeError"
    assert "Traceback" in reply.detail
    assert "secret detail" in reply.detail
    assert not reply.fatal


def test_probe_answers_this_process_pid() -> None:
    reply = answer(_NO_STORE, Probe(allocate_bytes=1024))
    assert reply == Done(str(os.getpid()).encode("ascii"))


def test_memory_error_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(probe: Probe) -> bytes:
        raise MemoryError

    monkeypatch.setattr("dpgate_server.execution.worker.run_probe", out_of_memory)
    reply = answer(_NO_STORE, Probe())
    assert isinstance(reply, Failed)
    assert reply.fatal
