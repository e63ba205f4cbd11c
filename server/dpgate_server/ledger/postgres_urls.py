"""PostgreSQL ledger URLs: which locations name a database, and how to show one safely.

Apart from the connections (`postgres_connections`), so that telling an SQLite path from a
database URL, or naming a database in a log line, does not import psycopg: a server on an
SQLite ledger never loads it.
"""

from __future__ import annotations

import re
import urllib.parse

PASSWORD_IN_QUERY = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)
"""A password given as a query parameter of the URL (`?password=...`)."""


def redacted_url(url: str) -> str:
    """`url` with any password replaced by `***` (for logs and error messages).

    Example:
        >>> redacted_url("postgresql://dpgate:s3cret@db.example:5432/ledger")
        'postgresql://dpgate:***@db.example:5432/ledger'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable PostgreSQL URL>"
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")
        user, colon, _ = credentials.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"{user}@{host}"
    query = PASSWORD_IN_QUERY.sub(r"\1***", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_postgres_url(location: str) -> bool:
    """Whether `location` names a PostgreSQL database rather than an SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))
