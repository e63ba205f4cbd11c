"""Administrator sessions for the web pages: a login form, a cookie, CSRF tokens.

The admin token is posted once in a form body (never in a URL, so never in logs or
history), checked against the ledger, and exchanged for a random session id in an
HttpOnly, SameSite=Strict cookie scoped to /admin. Each session has its own CSRF token,
required in every form that changes anything (only logging out, for now); the login form
itself is protected by a double-submit cookie. Sessions live in memory: a restart logs
everyone out. The token's validity is checked again at every page, so revoking it or
disabling its requester ends the session.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dpgate_server.ledger.model import Principal

SESSION_COOKIE = "dpgate_admin_session"
LOGIN_CSRF_COOKIE = "dpgate_login_csrf"
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class AdminSession:
    session_id: str
    principal: Principal
    csrf_token: str
    expires_at: dt.datetime


class AdminSessions:
    """Thread-safe in-memory sessions, bounded in number (oldest dropped first)."""

    def __init__(
        self,
        lifetime: dt.timedelta,
        token_still_valid: Callable[[Principal], bool],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._lifetime = lifetime
        self._still_valid = token_still_valid
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, AdminSession] = {}

    def open(self, principal: Principal) -> AdminSession:
        session = AdminSession(
            session_id=secrets.token_urlsafe(32),
            principal=principal,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._lifetime,
        )
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                del self._sessions[oldest.session_id]
            self._sessions[session.session_id] = session
        return session

    def find(self, session_id: str | None) -> AdminSession | None:
        """The live session with this id, or None (expired or revoked ones are dropped)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            return None
        if self._clock() >= session.expires_at or not self._still_valid(session.principal):
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


def same_secret(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two CSRF tokens (both present)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
