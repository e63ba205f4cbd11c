"""Each practice's consent to its data being used, per dataset.

Practices are the data controllers: a practice whose consent is withdrawn is left out of
every later version (its rows and its public key). The dataset sets the default for a
practice that never said otherwise (the demo: granted). The state is one small JSON file,
replaced atomically on every change (durable.replace_text); callers hold the dataset's
governance lock, so changes never interleave.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from dpgate_server.durable import replace_text

CONSENT_FILE = "consent.json"


class ConsentState(StrEnum):
    """A practice's decision."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """The last recorded decision of a practice.

    Attributes:
        practice_code: the practice.
        state: granted or withdrawn.
        changed_at: when it was recorded (RFC 3339, UTC).
        changed_by: the requester who recorded it ("operator" for the local command line).
        instruction_reference: for an administrator acting on a practice's written
            instruction, its reference; else empty.
    """

    practice_code: str
    state: ConsentState
    changed_at: str
    changed_by: str
    instruction_reference: str = ""


class ConsentStore:
    """The consent records of one dataset, with the dataset's default for the rest."""

    def __init__(self, folder: Path, default: ConsentState) -> None:
        self._path = folder / CONSENT_FILE
        self.default = default

    def state(self, practice_code: str) -> ConsentState:
        """The practice's current state (the default if it never decided)."""
        record = self.records().get(practice_code)
        return self.default if record is None else record.state

    def records(self) -> dict[str, ConsentRecord]:
        """Every recorded decision, by practice code."""
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {
            code: ConsentRecord(
                practice_code=code,
                state=ConsentState(item["state"]),
                changed_at=item["changed_at"],
                changed_by=item["changed_by"],
                instruction_reference=item.get("instruction_reference", ""),
            )
            for code, item in raw.items()
        }

    def record(self, decision: ConsentRecord) -> None:
        """Store `decision` as the practice's current one (atomically, durably)."""
        records = self.records()
        records[decision.practice_code] = decision
        replace_text(self._path, _to_json(records))

    def restore(self, previous: ConsentRecord | None, practice_code: str) -> None:
        """Put back the practice's earlier record (None: it had none); for undoing a change
        whose audit event could not be written."""
        records = self.records()
        if previous is None:
            records.pop(practice_code, None)
        else:
            records[practice_code] = previous
        replace_text(self._path, _to_json(records))


def _to_json(records: dict[str, ConsentRecord]) -> str:
    body = {}
    for code in sorted(records):
        item = asdict(records[code])
        item.pop("practice_code")
        item["state"] = records[code].state.value
        body[code] = item
    return json.dumps(body, indent=1, sort_keys=True)
