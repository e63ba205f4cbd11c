"""PublishDatasetVersionWithProgress and `dpgate admin publish` against the governed server:
stages in order, then the result; the unary call's refusals and audit; a cancelled call
publishes nothing; never a count of rows."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from dpgate import (
    AdminClient,
    DatasetInfo,
    InvalidRequestError,
    PermissionDeniedError,
    PreconditionFailedError,
    PublishStep,
)
from dpgate_proto.v1 import admin_pb2, admin_pb2_grpc
from dpgate_server.durable import exclusive_lock
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import AuditEvent, Outcome
from dpgate_server.store.store import STAGING_DIR, DatasetStore
from tests.integration.governance.conftest import GovernedService
from tests.integration.governance.test_provider_cli import dpgate
from tests.unit.governance.helpers import DATASET_ID, SMALL, version_rows

RPC = "PublishDatasetVersionWithProgress"
STAGES = ["reading", "bounding", "writing", "verifying"]
WAIT_SECONDS = 60.0


def store(service: GovernedService) -> DatasetStore:
    return DatasetStore(service.world.store_root)


def events_of(service: GovernedService, rpc: str = RPC) -> list[AuditEvent]:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        return [e for e in ledger.list_events(limit=100_000) if e.rpc == rpc]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds (a synchronisation point, never a timing assertion)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def practice_count(service: GovernedService) -> int:
    """Practices in the version just published: what its publish read and wrote (another
    module's test on the shared server may have withdrawn one of the declared practices)."""
    rows = version_rows(service.world.store_root)
    return rows.get_column("practice_code").n_unique()


def no_build_left(service: GovernedService) -> bool:
    """No folder of an unfinished build in the dataset's staging area."""
    folder = service.world.store_root / DATASET_ID / STAGING_DIR
    return not folder.is_dir() or not any(folder.iterdir())


def test_the_stream_yields_every_stage_in_order_then_the_result(
    governed: GovernedService,
) -> None:
    with governed.provider() as provider:
        provider.upload(DATASET_ID, SMALL, governed.world.extract(SMALL))
    before = store(governed).current(DATASET_ID).version
    with governed.admin() as admin:
        events = list(admin.publish_with_progress(DATASET_ID))
    *steps, last = events
    assert isinstance(last, DatasetInfo)
    assert all(isinstance(step, PublishStep) for step in steps)
    current = store(governed).current(DATASET_ID)
    assert (last.dataset_id, last.version) == (DATASET_ID, current.version)
    assert current.version != before
    seen = [s.stage for i, s in enumerate(steps) if i == 0 or steps[i - 1].stage != s.stage]
    assert seen == STAGES  # each stage once, in order
    for stage in STAGES:
        of_stage = [s for s in steps if isinstance(s, PublishStep) and s.stage == stage]
        done = [s.done for s in of_stage]
        assert done == sorted(done), stage
        assert done[0] == 0
        assert done[-1] == of_stage[-1].total > 0
    practices = practice_count(governed)
    assert {(s.stage, s.unit, s.total) for s in steps if s.stage in ("reading", "writing")} == {
        ("reading", "practices", practices),
        ("writing", "practices", practices),
    }
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    # the same audit as the unary call: one ANSWERED event saying what was published
    # (and, before it, the bias figure's charge to the dataset's cap)
    published = f"published {current.version} from {before}"
    [event] = [e for e in events_of(governed) if e.detail.startswith(published)]
    assert event.outcome is Outcome.ANSWERED
    [charge] = [
        e
        for e in events_of(governed)
        if f"bias_figure of {DATASET_ID} {current.version}" in e.detail
    ]
    assert charge.seq < event.seq


def test_progress_messages_carry_no_row_counts(governed: GovernedService) -> None:
    fields = {f.name for f in admin_pb2.PublishProgress.DESCRIPTOR.fields}
    assert fields == {
        "stage",
        "done",
        "total",
        "unit",
        "fraction",
        "elapsed_seconds",
        "seconds_left",
    }
    with governed.admin() as admin:
        steps = [e for e in admin.publish_with_progress(DATASET_ID) if isinstance(e, PublishStep)]
    rows = version_rows(governed.world.store_root).height
    assert {s.unit for s in steps} == {"practices", "buckets", "checks"}
    assert rows not in {s.done for s in steps} | {s.total for s in steps}


@pytest.mark.parametrize("role", ["analyst", "provider", "auditor"])
def test_a_token_without_the_admin_role_is_refused_and_nothing_is_published(
    governed: GovernedService, role: str
) -> None:
    before = store(governed).versions(DATASET_ID)
    denied_before = [e for e in events_of(governed) if e.outcome is Outcome.DENIED]
    with (
        AdminClient(governed.target, governed.tokens[role]) as client,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        list(client.publish_with_progress(DATASET_ID))
    assert caught.value.reason == "ROLE_FORBIDDEN"
    assert store(governed).versions(DATASET_ID) == before
    denied = [e for e in events_of(governed) if e.outcome is Outcome.DENIED]
    assert len(denied) == len(denied_before) + 1


def test_a_publish_while_another_builds_the_dataset_is_refused(governed: GovernedService) -> None:
    before = store(governed).versions(DATASET_ID)
    with store(governed).building(DATASET_ID), governed.admin() as admin:  # another build
        with pytest.raises(PreconditionFailedError) as caught:
            list(admin.publish_with_progress(DATASET_ID))
        with pytest.raises(PreconditionFailedError) as unary:
            admin.publish_dataset_version(DATASET_ID)
    assert caught.value.reason == unary.value.reason == "PUBLISH_IN_PROGRESS"
    assert caught.value.message == unary.value.message
    assert store(governed).versions(DATASET_ID) == before
    assert events_of(governed)[-1].detail == "PUBLISH_IN_PROGRESS"


def test_a_missing_dataset_id_is_refused_as_the_unary_call_refuses_it(
    governed: GovernedService,
) -> None:
    with governed.admin() as admin, pytest.raises(InvalidRequestError) as caught:
        list(admin.publish_with_progress(""))
    assert caught.value.reason == "MISSING_FIELD"


def test_a_cancelled_call_stops_the_publish_and_publishes_nothing(
    governed: GovernedService, caplog: pytest.LogCaptureFixture
) -> None:
    """The publish is held at its start (the test takes the governance lock), the call is
    cancelled, and only once the server has seen the cancel is the publish let go: it
    stops at its first step, removes its working folder and is audited as cancelled."""
    caplog.set_level(logging.INFO, logger="dpgate_server.api.publish_rpc")
    wait_for(lambda: not publish_thread_running(), "an earlier publish to end")
    before = store(governed).versions(DATASET_ID)
    audited = len(events_of(governed))
    lock = governed.world.governance_root / DATASET_ID / "LOCK"
    channel = grpc.insecure_channel(governed.target)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    try:
        with exclusive_lock(lock):
            call = stub.PublishDatasetVersionWithProgress(
                admin_pb2.PublishDatasetVersionWithProgressRequest(dataset_id=DATASET_ID),
                metadata=(("authorization", f"Bearer {governed.tokens['admin']}"),),
            )
            wait_for(publish_thread_running, "the publish to start")
            call.cancel()
            wait_for(lambda: "went away" in caplog.text, "the server to see the cancel")
        wait_for(lambda: len(events_of(governed)) > audited, "the cancel to be audited")
    finally:
        channel.close()
    assert store(governed).versions(DATASET_ID) == before
    assert no_build_left(governed)
    last = events_of(governed)[-1]
    assert (last.outcome, last.detail) == (Outcome.FAILED, "PUBLISH_CANCELLED")
    with governed.admin() as admin:  # nothing was left locked: the next publish works
        info = admin.publish_dataset_version(DATASET_ID)
    assert info.version == store(governed).current(DATASET_ID).version


def test_a_call_cancelled_mid_stream_leaves_a_whole_version_current(
    governed: GovernedService,
) -> None:
    """However late the cancel comes, the dataset ends with a whole version current: the
    old one (the publish stopped) or the new one (it was already sealing)."""
    wait_for(lambda: not publish_thread_running(), "an earlier publish to end")
    before = store(governed).current(DATASET_ID).version
    audited = len(events_of(governed))
    with governed.admin() as admin:
        for event in admin.publish_with_progress(DATASET_ID):
            assert isinstance(event, PublishStep)
            break  # leaving the loop cancels the call
    wait_for(lambda: len(events_of(governed)) > audited, "the publish's end to be audited")
    wait_for(lambda: not publish_thread_running(), "the publish to end")
    current = store(governed).current(DATASET_ID)
    current.verify_files()
    assert no_build_left(governed)
    last = events_of(governed)[-1]
    if current.version == before:
        assert (last.outcome, last.detail) == (Outcome.FAILED, "PUBLISH_CANCELLED")
    else:
        assert last.outcome is Outcome.ANSWERED


def test_admin_publish_command_shows_the_stages_then_the_version(
    governed: GovernedService, tmp_path: Path
) -> None:
    result = dpgate(governed, "admin", tmp_path, "admin", "publish", DATASET_ID)
    assert result.exit_code == 0, result.output
    current = store(governed).current(DATASET_ID).version
    assert f"{DATASET_ID} version {current} is now current" in result.stdout
    lines = result.stderr.splitlines()
    shown = [line.split()[0] for line in lines if line.split()[:1] in [[s] for s in STAGES]]
    assert shown == STAGES
    practices = practice_count(governed)
    assert f"{practices}/{practices} practices" in next(x for x in lines if "reading" in x)
    assert "4/4 checks" in result.stderr
    rows = version_rows(governed.world.store_root).height
    assert str(rows) not in result.output
    assert f"{rows:,}" not in result.output


def test_admin_publish_command_as_json_gives_the_version_only(
    governed: GovernedService, tmp_path: Path
) -> None:
    result = dpgate(governed, "admin", tmp_path, "admin", "publish", DATASET_ID, "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["version"] == store(governed).current(DATASET_ID).version
    assert "reading" not in result.stderr


def publish_thread_running() -> bool:
    return any(t.name == f"publish {DATASET_ID}" for t in threading.enumerate())
