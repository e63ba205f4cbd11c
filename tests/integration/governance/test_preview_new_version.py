"""A preview on a new dataset version says when a question answered on an older one will
be charged again, through the real server, client and CLI, around a real publish.

Releases are per version, so the identical question on a new version is a new release,
charged again. The preview names the earlier release only to a requester who received it
(paid for it, or had it shared with them); another requester learns nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpgate import AdminClient, Client, count
from dpgate.cli import app
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor
from tests.integration.governance.conftest import GovernedService
from tests.unit.governance.helpers import DATASET_ID

SETUP = RequestInfo(request_id="preview-test-setup", rpc="test-setup")


@dataclass(frozen=True)
class Publishing:
    service: GovernedService
    tokens: dict[str, str]
    """"admin", "analyst" (pays), "sharer" (served the analyst's release free), "outsider":
    requesters of this module alone, so no other test on the shared server asked first."""
    folder: Path

    @property
    def target(self) -> str:
        return self.service.target

    def client(self, name: str) -> Client:
        return Client(self.target, self.tokens[name], timeout=120)


@pytest.fixture(scope="module")
def publishing(governed: GovernedService, tmp_path_factory: pytest.TempPathFactory) -> Publishing:
    tokens = {"admin": governed.tokens["admin"]}
    with Ledger.open_sqlite(governed.ledger_path) as ledger:
        for name in ("analyst", "sharer", "outsider"):
            requester_id = f"preview-{name}"
            ledger.admin.create_requester(
                requester_id, name=name, organisation="Org", agreement="DSA", request=SETUP
            )
            ledger.admin.grant_allocation(
                requester_id,
                DATASET_ID,
                to_units_floor(2),
                request=SETUP,
                purpose="testing",
                agreement="DSA-TEST",
            )
            issued = ledger.admin.issue_token(requester_id, Role.ANALYST, request=SETUP)
            tokens[name] = issued.token
    return Publishing(governed, tokens, tmp_path_factory.mktemp("preview_new_version"))


def _preview_in_words(publishing: Publishing, name: str) -> str:
    result = CliRunner().invoke(
        app,
        ["preview", DATASET_ID, "--by", "practice_code", "--epsilon", "0.5"],
        env={
            "DPGATE_TARGET": publishing.target,
            "DPGATE_TOKEN": publishing.tokens[name],
            "DPGATE_CONFIG": str(publishing.folder / "no-client-config.toml"),
            "DPGATE_PROFILE": None,
            "COLUMNS": "300",
        },
    )
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_a_preview_after_a_publish_says_the_question_will_be_charged_again(
    publishing: Publishing,
) -> None:
    question = count(DATASET_ID).by("practice_code").epsilon(Decimal("0.5"))
    other_question = count(DATASET_ID).by("sex").epsilon(Decimal("0.5"))
    with publishing.client("analyst") as analyst, publishing.client("sharer") as sharer:
        paid = analyst.query(question)
        shared = sharer.query(question)
        assert (paid.charged, shared.charged, shared.release_id) == (
            Decimal("0.5"),
            0,
            paid.release_id,
        )
        assert analyst.preview(question).earlier_release is None  # released on this version

    with AdminClient(publishing.target, publishing.tokens["admin"]) as admin:
        published = admin.publish_dataset_version(DATASET_ID).version
    assert published != paid.dataset_version

    with (
        publishing.client("analyst") as analyst,
        publishing.client("sharer") as sharer,
        publishing.client("outsider") as outsider,
    ):
        own = analyst.preview(question)
        assert own.spend == Decimal("0.5")
        assert own.earlier_release is not None
        assert (
            own.earlier_release.release_id,
            own.earlier_release.dataset_version,
            own.earlier_release.cost,
            own.earlier_release.shared,
        ) == (paid.release_id, paid.dataset_version, Decimal("0.5"), False)
        said = (
            f"released to you on version {paid.dataset_version} for epsilon 0.5; the dataset"
            " has a new version, so this query will be charged epsilon 0.5 again"
        )
        assert own.warnings == (said,)
        assert said in repr(own)
        assert said in _preview_in_words(publishing, "analyst")

        received = sharer.preview(question)
        assert received.earlier_release is not None
        assert (received.earlier_release.release_id, received.earlier_release.shared) == (
            paid.release_id,
            True,
        )
        assert received.warnings == (
            f"shared with you free on version {paid.dataset_version} (released for epsilon"
            " 0.5); the dataset has a new version, so this query will be charged epsilon 0.5",
        )

        # Never asked it: told nothing of the others' release, in the preview or its words.
        never_asked = outsider.preview(question)
        assert (never_asked.earlier_release, never_asked.warnings) == (None, ())
        assert "charged again" not in _preview_in_words(publishing, "outsider")
        assert analyst.preview(other_question).earlier_release is None

        # The warning was true: the question is charged on the new version ...
        fresh = analyst.query(question)
        assert (fresh.charged, fresh.repeat, fresh.dataset_version) == (
            Decimal("0.5"),
            False,
            published,
        )
        # ... and, answered there, it is free again: nothing more to warn of.
        assert analyst.preview(question).earlier_release is None
        assert sharer.preview(question).earlier_release is None
