"""Signed heads: published at start and after a publish; a cut chain is detected against one.

The cut is made the way an attacker with the ledger file would: delete the last events and
rewrite the stored head to the new last event, directly in SQLite. The plain verification
passes (the chain is self-consistent); verification against a head signed earlier fails.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate.cli import app
from dpgate_server.signed_heads import SignedHead
from dpgate_server.store.store import DatasetVersion

from .conftest import ObservedService, start_observed


def _latest_file(service: ObservedService) -> Path:
    files = sorted((service.folder / "signed-heads").glob("head-*.json"))
    assert files, "no signed head was published"
    return files[-1]


def test_a_head_is_signed_at_start_and_verifies(observed: ObservedService) -> None:
    signed = SignedHead.from_json(_latest_file(observed).read_text())
    heads = observed.running.sidecars.heads
    assert heads is not None
    assert signed.signature_matches(heads.public_key)
    with AuditClient(observed.target, token=observed.tokens["auditor"]) as audit:
        result = audit.verify_signed_head(_latest_file(observed).read_text())
        published = audit.signed_head()
    assert result.valid, result.problem
    assert published is not None
    assert published["public_key"] == heads.public_key


def test_a_forged_signature_is_refused(observed: ObservedService) -> None:
    raw = json.loads(_latest_file(observed).read_text())
    raw["head_hash"] = "0" * 64
    with AuditClient(observed.target, token=observed.tokens["auditor"]) as audit:
        result = audit.verify_signed_head(json.dumps(raw))
    assert not result.valid
    assert "signature is not this server's" in result.problem


def test_cut_chain_with_rewritten_head_is_detected_against_a_signed_head(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    service = start_observed(small_dataset, tmp_path)
    try:
        with Client(service.target, token=service.tokens["analyst"]) as client:
            for _ in range(3):
                client.datasets()
        heads = service.running.sidecars.heads
        assert heads is not None
        kept = heads.publish_now()
        assert kept is not None
        kept_file = tmp_path / "kept-head.json"
        kept_file.write_text(kept.to_json())
        with Client(service.target, token=service.tokens["analyst"]) as client:
            client.datasets()
    finally:
        service.running.stop(grace_seconds=1)

    ledger_path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(ledger_path) as db:
        keep = kept.event_count - 2
        db.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
        (last_hash,) = db.execute(
            "SELECT event_hash FROM audit_events WHERE seq = ?", (keep,)
        ).fetchone()
        db.execute("UPDATE audit_head SET event_count = ?, head_hash = ?", (keep, last_hash))

    service = start_observed(small_dataset, tmp_path, tokens=service.tokens)
    try:
        with AuditClient(service.target, token=service.tokens["auditor"]) as audit:
            assert audit.verify().valid  # the cut chain is self-consistent
            result = audit.verify_signed_head(kept_file.read_text())
        assert not result.valid
        assert result.first_bad_sequence == kept.event_count
        assert "the chain was cut" in result.problem

        env = {"DPGATE_TARGET": service.target, "DPGATE_TOKEN": service.tokens["auditor"]}
        cli = CliRunner().invoke(
            app, ["audit", "verify", "--against-head", str(kept_file)], env=env
        )
        assert cli.exit_code == 8, cli.output
        assert "NOT valid" in cli.output
    finally:
        service.running.stop(grace_seconds=1)
