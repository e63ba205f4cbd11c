"""The Starlette application: public pages, administrator pages, and their guards.

Guards, in the order a request meets them (`_guard`): a request id bound for its log
lines; a query string that is too long or not UTF-8 refused with 400; only GET and HEAD
on public pages and only the two admin forms accept POST (405 otherwise), and a POST whose
Origin is another site is refused (403); security headers on every answer (no scripts at
all, no framing, no referrer to other sites). Each page then accepts only its own parameters, each
bounded (`_params`): anything else is a 400 saying what to change.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from dpgate_server.ledger.errors import LedgerUnavailable
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo, Role
from dpgate_server.observability.logs import bind_request_id, new_request_id, unbind_request_id
from dpgate_server.web.admin_data import admin_view
from dpgate_server.web.charts import line_chart
from dpgate_server.web.public_data import PublicData
from dpgate_server.web.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AdminSessions,
    new_csrf_token,
    same_secret,
)

MAX_QUERY_STRING = 1024
"""Longest query string accepted (bytes); the pages need a few dozen."""
MAX_FORM_BYTES = 2048
"""Longest login form accepted."""
_POST_PATHS = frozenset({"/admin/login", "/admin/logout"})
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_log = logging.getLogger(__name__)

LEDGER_AWAY_RETRY_AFTER_S = 30
"""What a page served while the ledger is down asks browsers and crawlers to wait."""


@dataclass(frozen=True, slots=True)
class WebOptions:
    page_size: int
    near_cap_fraction: float
    session_minutes: int
    secure_cookies: bool
    """True behind TLS: cookies are then sent only over HTTPS."""


def build_app(ledger: Ledger, data: PublicData, options: WebOptions) -> Starlette:
    """The web application over `ledger` and the public `data`."""
    pages = _Pages(ledger, data, options)
    routes = [
        Route("/", pages.index, methods=["GET"]),
        Route("/releases", pages.releases, methods=["GET"]),
        Route("/datasets/{dataset_id:str}", pages.dataset, methods=["GET"]),
        Route("/audit", pages.audit, methods=["GET"]),
        Route("/audit/head.json", pages.latest_head, methods=["GET"]),
        Route("/audit/heads/{event_count:int}.json", pages.head, methods=["GET"]),
        Route("/admin", pages.admin, methods=["GET"]),
        Route("/admin/login", pages.login_form, methods=["GET"]),
        Route("/admin/login", pages.login, methods=["POST"]),
        Route("/admin/logout", pages.logout, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard)],
        exception_handlers={HTTPException: pages.error, LedgerUnavailable: pages.ledger_away},
    )


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    token = bind_request_id(new_request_id())
    try:
        response = await _checked(request, call_next)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        _log.info("%s %s %d", request.method, request.url.path, response.status_code)
        return response
    finally:
        unbind_request_id(token)


async def _checked(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    raw = request.scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_STRING:
        return _plain(400, f"the query string is longer than {MAX_QUERY_STRING} bytes")
    try:
        urllib.parse.unquote(raw.decode("ascii"), errors="strict")
    except UnicodeError:
        return _plain(400, "the query string is not valid percent-encoded UTF-8")
    if request.method not in ("GET", "HEAD"):
        if request.url.path not in _POST_PATHS:
            return _plain(405, "this page is read-only: only GET is allowed")
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            return _plain(403, "a form from another site cannot post here")
    return await call_next(request)


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _plain(status: int, message: str) -> Response:
    response = PlainTextResponse(f"{status}: {message}\n", status_code=status)
    for key, value in _SECURITY_HEADERS.items():
        response.headers[key] = value
    return response


def _params(request: Request, allowed: dict[str, int]) -> dict[str, str]:
    """The query parameters, each named in `allowed` (name -> longest value), once."""
    pairs = urllib.parse.parse_qsl(
        request.scope.get("query_string", b"").decode("ascii"), keep_blank_values=True
    )
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise HTTPException(400, f"unknown parameter {name[:40]!r}; this page takes: {names}")
        if name in found:
            raise HTTPException(400, f"parameter {name!r} is given twice")
        if len(value) > allowed[name]:
            raise HTTPException(
                400, f"parameter {name!r} is longer than {allowed[name]} characters"
            )
        found[name] = value
    return found


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _page_number(text: str | None) -> int:
    if text is None or text == "":
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise HTTPException(400, "page must be a whole number from 1")
    return int(text)


class _Pages:
    """The endpoints (sync ones run in Starlette's thread pool)."""

    def __init__(self, ledger: Ledger, data: PublicData, options: WebOptions) -> None:
        self._ledger = ledger
        self._data = data
        self._options = options
        self._templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
        self._sessions = AdminSessions(
            dt.timedelta(minutes=options.session_minutes), self._token_still_valid
        )

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return self._templates.TemplateResponse(
            request,
            name,
            {"show_organisations": self._data.show_organisations, **context},
            status_code=status,
        )

    # public

    def index(self, request: Request) -> Response:
        _params(request, {})
        snapshot = self._data.snapshot()
        charts = {
            d.dataset_id: line_chart(
                f"Spend on {d.dataset_id} over time", list(d.series), d.cap_decimal
            )
            for d in snapshot.datasets
        }
        heads = self._data.signed_heads(limit=1)
        return self._render(
            request,
            "index.html",
            datasets=snapshot.datasets,
            charts=charts,
            rows=snapshot.rows[:10],
            total=len(snapshot.rows),
            cells=self._data.cells,
            head=heads[0] if heads else None,
        )

    def releases(self, request: Request) -> Response:
        params = _params(request, {"q": 200, "dataset": 100, "page": 8})
        page = _page_number(params.get("page"))
        text = params.get("q", "").strip().lower()
        dataset = params.get("dataset", "")
        rows = [
            r
            for r in self._data.snapshot().rows
            if (not text or r.matches(text)) and (not dataset or r.dataset_id == dataset)
        ]
        size = self._options.page_size
        pages = max(1, math.ceil(len(rows) / size))
        if page > pages:
            raise HTTPException(400, f"page {page} is past the last page, {pages}")
        shown = rows[(page - 1) * size : page * size]
        return self._render(
            request,
            "releases.html",
            rows=shown,
            total=len(rows),
            page=page,
            pages=pages,
            q=params.get("q", ""),
            dataset=dataset,
            cells=self._data.cells,
            link=lambda p: (
                "/releases?"
                + urllib.parse.urlencode(
                    {
                        k: v
                        for k, v in (("q", params.get("q", "")), ("dataset", dataset), ("page", p))
                        if v
                    }
                )
            ),
        )

    def dataset(self, request: Request) -> Response:
        _params(request, {})
        dataset_id = request.path_params["dataset_id"]
        snapshot = self._data.snapshot()
        found = next((d for d in snapshot.datasets if d.dataset_id == dataset_id), None)
        if found is None:
            raise HTTPException(404, f"no dataset {dataset_id[:100]!r}")
        return self._render(
            request,
            "dataset.html",
            dataset=found,
            chart=line_chart(
                f"Spend on {dataset_id} over time", list(found.series), found.cap_decimal
            ),
            versions=self._data.versions(dataset_id),
        )

    def audit(self, request: Request) -> Response:
        _params(request, {})
        heads = self._data.signed_heads(limit=500)
        return self._render(
            request,
            "audit.html",
            heads=heads,
            latest=heads[0] if heads else None,
            public_key=self._data.public_key,
        )

    def latest_head(self, request: Request) -> Response:
        _params(request, {})
        heads = self._data.signed_heads(limit=1)
        if not heads:
            raise HTTPException(404, "no signed head has been published")
        return Response(heads[0].to_json(), media_type="application/json")

    def head(self, request: Request) -> Response:
        _params(request, {})
        found = self._data.signed_head(request.path_params["event_count"])
        if found is None:
            raise HTTPException(404, "no signed head of that many events was published")
        return Response(found.to_json(), media_type="application/json")

    # administrators

    def admin(self, request: Request) -> Response:
        _params(request, {})
        principal, csrf = self._admin(request)
        if principal is None:
            return self._render(request, "admin_refused.html", status=401)
        view = admin_view(self._ledger, self._options.near_cap_fraction, dt.datetime.now(dt.UTC))
        chart = line_chart("Spending over time by requester", list(view.spending), until=_now())
        return self._render(
            request, "admin.html", view=view, chart=chart, csrf=csrf, admin=principal.requester_id
        )

    def login_form(self, request: Request) -> Response:
        _params(request, {})
        return self._login_page(request, 200, "")

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        if not same_secret(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            raise HTTPException(403, "the login form expired; load it again")
        source = request.client.host if request.client else ""
        principal = self._ledger.authenticate(form.get("token", "").strip())
        info = RequestInfo(request_id=new_request_id(), rpc="web:admin-login", source=source)
        if principal is None or principal.role is not Role.ADMIN:
            if principal is None:
                self._ledger.record_unauthenticated(info)
            else:
                self._ledger.record_event(
                    RequestInfo(info.request_id, info.rpc, principal=principal, source=source),
                    Outcome.DENIED,
                )
            return self._login_page(request, 401, "That is not a valid administrator token.")
        self._ledger.record_event(
            RequestInfo(info.request_id, info.rpc, principal=principal, source=source),
            Outcome.ANSWERED,
        )
        session = self._sessions.open(principal)
        response = RedirectResponse("/admin", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session.session_id,
            max_age=self._options.session_minutes * 60,
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=self._options.secure_cookies,
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        session = self._sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is None or not same_secret(form.get("csrf"), session.csrf_token):
            raise HTTPException(403, "not logged in, or the form expired")
        self._sessions.close(session.session_id)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._render(request, "error.html", status=exc.status_code, message=exc.detail)

    def ledger_away(self, request: Request, exc: Exception) -> Response:
        """The ledger's database is down: a page that says so (its log line keeps the
        redacted detail), never a traceback, and a hint of when to come back."""
        _log.warning("page %s without the ledger: %s", request.url.path, exc)
        response = self._render(
            request,
            "error.html",
            status=503,
            message="The ledger cannot be reached just now; try again in a minute.",
        )
        response.headers["Retry-After"] = str(LEDGER_AWAY_RETRY_AFTER_S)
        return response

    def _login_page(self, request: Request, status: int, problem: str) -> Response:
        csrf = new_csrf_token()
        response = self._render(
            request, "admin_login.html", status=status, csrf=csrf, problem=problem
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            csrf,
            max_age=600,
            path="/admin/login",
            httponly=True,
            samesite="strict",
            secure=self._options.secure_cookies,
        )
        return response

    def _admin(self, request: Request) -> tuple[Principal | None, str]:
        """The administrator behind a bearer header or a session cookie, and the CSRF token."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            principal = self._ledger.authenticate(header[7:].strip())
            if principal is None or principal.role is not Role.ADMIN:
                return None, ""
            return principal, ""
        session = self._sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None, ""
        return session.principal, session.csrf_token

    def _token_still_valid(self, principal: Principal) -> bool:
        now = dt.datetime.now(dt.UTC)
        tokens = self._ledger.admin.list_tokens(principal.requester_id)
        token = next((t for t in tokens if t.token_id == principal.token_id), None)
        requesters = {r.requester_id: r for r in self._ledger.admin.list_requesters()}
        requester = requesters.get(principal.requester_id)
        return (
            token is not None
            and token.is_valid_at(now)
            and requester is not None
            and requester.enabled
        )


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form body, parsed strictly."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise HTTPException(400, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(400, f"the form is longer than {MAX_FORM_BYTES} bytes")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), strict_parsing=False)
    except UnicodeDecodeError:
        raise HTTPException(400, "the form is not valid percent-encoded text") from None
    return dict(pairs)
