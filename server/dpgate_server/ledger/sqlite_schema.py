"""The SQLite ledger's schema, as numbered migrations applied in order at start-up.

A migration is never edited once released: a change is a new, higher-numbered entry.
`schema_version` holds one row per applied migration. CHECK constraints repeat the
money rules (spent never above granted or cap) so that even a logic bug cannot commit
an overspend: the transaction would fail instead.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "requesters, tokens, datasets, allocations, releases, audit chain",
        (
            """
            CREATE TABLE requesters (
                requester_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                organisation TEXT NOT NULL,
                agreement TEXT NOT NULL,
                enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
                created_at TEXT NOT NULL
            ) STRICT
            """,
            """
            CREATE TABLE tokens (
                token_id TEXT PRIMARY KEY,
                token_hash TEXT NOT NULL UNIQUE,
                requester_id TEXT NOT NULL REFERENCES requesters (requester_id),
                role TEXT NOT NULL CHECK (role IN ('analyst', 'admin', 'auditor', 'provider')),
                practice_codes TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT,
                revoked_at TEXT
            ) STRICT
            """,
            "CREATE INDEX tokens_by_requester ON tokens (requester_id)",
            """
            CREATE TABLE datasets (
                dataset_id TEXT PRIMARY KEY,
                accounting TEXT NOT NULL,
                cap_units INTEGER NOT NULL CHECK (cap_units >= 0),
                spent_units INTEGER NOT NULL CHECK (spent_units >= 0 AND spent_units <= cap_units),
                share_releases INTEGER NOT NULL CHECK (share_releases IN (0, 1))
            ) STRICT
            """,
            """
            CREATE TABLE cap_changes (
                change_id INTEGER PRIMARY KEY,
                dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
                cap_before_units INTEGER NOT NULL,
                cap_after_units INTEGER NOT NULL,
                reason TEXT NOT NULL CHECK (length(reason) > 0),
                changed_by TEXT,
                changed_at TEXT NOT NULL
            ) STRICT
            """,
            """
            CREATE TABLE allocations (
                requester_id TEXT NOT NULL REFERENCES requesters (requester_id),
                dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
                granted_units INTEGER NOT NULL CHECK (granted_units >= 0),
                spent_units INTEGER NOT NULL
                    CHECK (spent_units >= 0 AND spent_units <= granted_units),
                expires_at TEXT,
                PRIMARY KEY (requester_id, dataset_id)
            ) STRICT
            """,
            """
            CREATE TABLE releases (
                release_id TEXT PRIMARY KEY,
                release_key TEXT NOT NULL,
                dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
                requester_id TEXT NOT NULL REFERENCES requesters (requester_id),
                cost_units INTEGER NOT NULL CHECK (cost_units > 0),
                payload BLOB NOT NULL,
                created_at TEXT NOT NULL,
                request_id TEXT NOT NULL,
                UNIQUE (release_key, requester_id)
            ) STRICT
            """,
            "CREATE INDEX releases_by_requester ON releases (requester_id, dataset_id)",
            "CREATE INDEX releases_by_dataset ON releases (dataset_id)",
            """
            CREATE TABLE idempotency_keys (
                requester_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                release_key TEXT NOT NULL,
                release_id TEXT NOT NULL REFERENCES releases (release_id),
                created_at TEXT NOT NULL,
                PRIMARY KEY (requester_id, idempotency_key)
            ) STRICT
            """,
            """
            CREATE TABLE audit_events (
                seq INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                requester_id TEXT,
                token_id TEXT,
                role TEXT,
                rpc TEXT NOT NULL,
                query_text TEXT NOT NULL,
                dataset_id TEXT,
                cost_units INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                release_id TEXT,
                request_id TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                event_hash TEXT NOT NULL
            ) STRICT
            """,
            """
            CREATE TABLE audit_head (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                event_count INTEGER NOT NULL,
                head_hash TEXT NOT NULL
            ) STRICT
            """,
            "INSERT INTO audit_head (singleton, event_count, head_hash) VALUES (1, 0, '"
            + "0" * 64
            + "')",
            """
            CREATE TABLE unauthenticated_pending (
                source TEXT NOT NULL,
                window_start TEXT NOT NULL,
                request_count INTEGER NOT NULL,
                first_rpc TEXT NOT NULL,
                first_request_id TEXT NOT NULL,
                last_at TEXT NOT NULL,
                PRIMARY KEY (source, window_start)
            ) STRICT
            """,
        ),
    ),
    (
        2,
        "allocations carry the purpose and agreement they were granted under",
        (
            "ALTER TABLE allocations ADD COLUMN purpose TEXT NOT NULL DEFAULT 'not recorded'",
            "ALTER TABLE allocations ADD COLUMN agreement TEXT NOT NULL DEFAULT 'not recorded'",
        ),
    ),
    (
        3,
        "idempotency keys keep what the first answer said, to replay it to a retry",
        (
            "ALTER TABLE idempotency_keys ADD COLUMN first_charged_units INTEGER"
            " CHECK (first_charged_units >= 0)",
            "ALTER TABLE idempotency_keys ADD COLUMN first_remaining_units INTEGER"
            " CHECK (first_remaining_units >= 0)",
            # All three or none (a key recorded before this migration has none).
            "ALTER TABLE idempotency_keys ADD COLUMN first_repeat INTEGER CHECK ("
            "first_repeat IN (0, 1)"
            " AND (first_repeat IS NULL) = (first_charged_units IS NULL)"
            " AND (first_repeat IS NULL) = (first_remaining_units IS NULL))",
        ),
    ),
    (
        4,
        "the current version of each dataset, one pointer every server on the ledger reads",
        (
            "CREATE TABLE current_versions ("
            " dataset_id TEXT PRIMARY KEY, version TEXT NOT NULL) STRICT",
        ),
    ),
    (
        5,
        "derived answers given free from a release's cells, listed with the releases",
        (
            """
            CREATE TABLE derived_answers (
                derived_id TEXT NOT NULL,
                requester_id TEXT NOT NULL REFERENCES requesters (requester_id),
                dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
                source_release_id TEXT NOT NULL REFERENCES releases (release_id),
                dataset_version TEXT NOT NULL,
                canonical_query TEXT NOT NULL,
                created_at TEXT NOT NULL,
                request_id TEXT NOT NULL,
                PRIMARY KEY (requester_id, derived_id)
            ) STRICT
            """,
            "CREATE INDEX derived_answers_by_requester ON derived_answers"
            " (requester_id, dataset_id)",
        ),
    ),
    (
        6,
        "spends charged to a dataset's cap by publishing (the bias figure), once per version",
        (
            """
            CREATE TABLE publish_spends (
                spend_id TEXT PRIMARY KEY,
                dataset_id TEXT NOT NULL REFERENCES datasets (dataset_id),
                dataset_version TEXT NOT NULL,
                purpose TEXT NOT NULL CHECK (length(purpose) > 0),
                cost_units INTEGER NOT NULL CHECK (cost_units > 0),
                created_at TEXT NOT NULL,
                request_id TEXT NOT NULL
            ) STRICT
            """,
            "CREATE INDEX publish_spends_by_version ON publish_spends"
            " (dataset_id, dataset_version, purpose)",
        ),
    ),
    (
        7,
        "releases name their dataset version, looked up by it; keys looked up by release",
        (
            # NULL for a release recorded before this migration (its version is only in
            # its payload): lookups by version include those and read their payloads.
            "ALTER TABLE releases ADD COLUMN dataset_version TEXT",
            "CREATE INDEX releases_by_version ON releases (dataset_id, dataset_version)",
            # find_received_releases: a requester's idempotency keys naming a release.
            "CREATE INDEX idempotency_keys_by_release ON idempotency_keys"
            " (requester_id, release_id)",
        ),
    ),
)
"""(version, description, statements), ascending."""
