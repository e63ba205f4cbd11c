"""Every amount the CLI shows a person reads "epsilon 0.5", never the ledger's units.

And what the CLI is given is read exactly: `--epsilon 0.1` is 0.1, and a confidence
level is checked by the same rule as the client's and the server's.
"""

from __future__ import annotations

import re
from decimal import Decimal

from tests.integration.cli.helpers import CliService, as_json, dpgate, error_of

RAW_UNITS = re.compile(r"\bunits?\b|nano|(?<![\w.-])\d{7,}(?![\w.])")
"""The word "units", "nano", or a bare integer as long as an amount in nano units."""


def _clean(text: str) -> None:
    assert not RAW_UNITS.search(text), text


def test_exhausted_budget_says_epsilon_in_its_message(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["poor_analyst"], "query", "gp_appointments",
        "--count", "--by", "sex", "--epsilon", "0.5",
    )  # fmt: skip
    assert result.exit_code == 3
    assert "the query costs epsilon 0.5 but only epsilon 0.1 remains" in result.stderr
    _clean(result.stderr)


def test_exhausted_budget_json_error_has_no_units(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["poor_analyst"], "query", "gp_appointments",
        "--count", "--epsilon", "0.25", "--json",
    )  # fmt: skip
    error = error_of(result)
    assert "epsilon 0.25" in error["message"]
    _clean(error["message"])
    assert (error["metadata"]["requested"], error["metadata"]["remaining"]) == ("0.25", "0.1")


def test_an_admin_refusal_says_epsilon(cli_service: CliService) -> None:
    as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "national_category", "--epsilon", "0.05", "--json",
        )
    )  # fmt: skip
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "cap", "set", "gp_appointments",
        "--epsilon", "0.01", "--reason", "too low",
    )  # fmt: skip
    assert result.exit_code == 7
    assert re.search(
        r"has spent epsilon [\d.]+; the cap cannot go down to epsilon 0\.01", result.stderr
    )
    _clean(result.stderr)


def test_a_too_fine_admin_amount_is_refused_in_plain_words(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "grant", "analyst",
        "gp_appointments", "--epsilon", "0.0000000001",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "epsilon 0.0000000001 has more than 9 decimal places" in result.stderr
    _clean(result.stderr)


def test_audit_events_describe_grants_in_epsilon(cli_service: CliService) -> None:
    # The server is shared by the whole session: read the events from the head seen now,
    # not from event 1 (earlier tests may have written more than a page of them).
    before = as_json(dpgate(cli_service, cli_service.tokens["auditor"], "audit", "head", "--json"))
    created = as_json(
        dpgate(
            cli_service, cli_service.tokens["admin"], "admin", "requesters", "create",
            "--name", "Audited Grant", "--organisation", "NHS", "--purpose", "DSA-9", "--json",
        )
    )  # fmt: skip
    requester_id = created["requester_id"]
    as_json(
        dpgate(
            cli_service, cli_service.tokens["admin"], "admin", "grant", requester_id,
            "gp_appointments", "--epsilon", "4.8", "--purpose", "planning",
            "--agreement", "DSA-9", "--json",
        )
    )  # fmt: skip
    events = as_json(
        dpgate(
            cli_service, cli_service.tokens["auditor"], "audit", "events",
            "--from", str(before["event_count"] + 1),
            "--limit", "1000", "--json",
        )
    )  # fmt: skip
    [grant] = [e["detail"] for e in events if f"to {requester_id}" in e["detail"]]
    assert grant.startswith(f"grant epsilon 4.8 on gp_appointments to {requester_id}")
    _clean(grant)


def test_query_spend_is_read_exactly_as_written(cli_service: CliService) -> None:
    preview = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
            "--count", "--by", "month", "--epsilon", "0.000000007", "--json",
        )
    )  # fmt: skip
    assert preview["spend"] == "0.000000007"
    assert Decimal(preview["spend"]) == Decimal("7E-9")


def test_a_spend_that_is_not_a_number_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
        "--count", "--epsilon", "half",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "must be a number" in result.output


def test_a_spend_below_the_smallest_amount_is_refused_in_plain_words(
    cli_service: CliService,
) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
        "--count", "--epsilon", "0.0000000001",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "below the smallest amount, 0.000000001" in result.stderr
    _clean(result.stderr)


def test_a_confidence_outside_0_to_1_is_a_usage_error_by_the_shared_rule(
    cli_service: CliService,
) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
        "--count", "--epsilon", "0.1", "--confidence", "95",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "strictly between 0 and 1" in result.output
