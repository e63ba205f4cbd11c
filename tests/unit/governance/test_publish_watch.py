"""PublishWatch: a publish on its own thread, its steps read as they come, stoppable.

With the real governance service over a copy of the world: a cancelled publish stops at
its next step and leaves nothing behind; one left alone yields every step, then its result.
"""

from __future__ import annotations

import pytest

from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.publish_progress import PublishStage
from dpgate_server.governance.publish_watch import PublishWatch
from dpgate_server.store.store import STAGING_DIR, DatasetStore
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    RecordingAudit,
    World,
    open_governance,
)


def test_steps_come_in_order_then_the_result(world: World) -> None:
    governance = open_governance(world, RecordingAudit())
    watch = PublishWatch(lambda progress: governance.publish(DATASET_ID, OPERATOR, progress))
    steps = list(watch.start().steps())
    result = watch.result()
    assert steps[0].stage is PublishStage.READING
    assert steps[-1].stage is PublishStage.VERIFYING
    assert steps[-1].done == steps[-1].total
    assert watch.finished
    assert DatasetStore(world.store_root).current(DATASET_ID).version == result.version.version


def test_a_cancelled_publish_stops_at_its_first_step_and_publishes_nothing(
    world: World,
) -> None:
    audit = RecordingAudit()
    governance = open_governance(world, audit)
    store = DatasetStore(world.store_root)
    before = store.versions(DATASET_ID)
    watch = PublishWatch(lambda progress: governance.publish(DATASET_ID, OPERATOR, progress))
    watch.cancel()  # before it starts: its first step stops it
    assert list(watch.start().steps()) == []
    with pytest.raises(GovernanceError) as caught:
        watch.result()
    assert caught.value.reason == "PUBLISH_CANCELLED"
    assert "nothing was published" in caught.value.message
    assert store.versions(DATASET_ID) == before
    assert not any((world.store_root / DATASET_ID / STAGING_DIR).glob("*"))
    assert audit.events == []  # the caller audits the cancel; nothing was published
    # the build lock was released: the next publish goes through
    assert governance.publish(DATASET_ID, OPERATOR).version.version not in before
