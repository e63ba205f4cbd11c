"""The public pages over plain HTTP: what they show, what they never show, bad input."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate_server.api.startup_checks import StartupError
from dpgate_server.config import WebSettings
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.sidecars import start_web
from dpgate_server.store.store import DatasetStore

from .conftest import WebService, web_settings


def _public_pages(web: WebService) -> dict[str, str]:
    paths = ["/", "/releases", "/releases?page=2", "/audit", "/audit/head.json"]
    paths += [f"/datasets/{web.dataset_id}", f"/releases?dataset={web.dataset_id}&q=month"]
    pages = {}
    for path in paths:
        status, html = web.get(path)
        assert status == 200, (path, html)
        pages[path] = html
    return pages


def _forbidden_values(web: WebService) -> list[str]:
    """Real values from the ledger, the store and the releases that must never be shown."""
    forbidden = [str(int(v)) for v in web.released_values if abs(v) >= 1000]
    store = DatasetStore(web.running.store_root)
    version = store.current(web.dataset_id)
    for record in (*version.manifest.appointment_files, *version.manifest.public_files):
        forbidden += [
            record.sha256,
            str(record.rows),
            str((version.path / record.path).stat().st_size),
        ]
    forbidden += list(web.tokens.values())
    with Ledger.open_sqlite(web.folder / "ledger.sqlite") as ledger:
        forbidden += [r.name for r in ledger.admin.list_requesters()]
        forbidden += [r.organisation for r in ledger.admin.list_requesters()]
        forbidden += [t.token_id for t in ledger.admin.list_tokens()]
        forbidden += [r.requester_id for r in ledger.admin.list_requesters()]
    forbidden += ["127.0.0.1", "::1"]
    return [f for f in forbidden if f]


def test_public_pages_never_show_values_counts_sizes_hashes_tokens_names_or_addresses(
    web: WebService,
) -> None:
    forbidden = _forbidden_values(web)
    assert sum(abs(v) >= 1000 for v in web.released_values) >= 10
    assert len(forbidden) > 20
    for path, html in _public_pages(web).items():
        for value in forbidden:
            # Not inside a longer number, word, date or time ("2026-12-04", "13:38").
            pattern = rf"(?<![\w.:-]){re.escape(value)}(?![\w.:-])"
            assert not re.search(pattern, html), f"{value!r} appears on {path}"


def test_releases_page_lists_every_answered_query_of_the_export(web: WebService) -> None:
    export = web.export()
    _, html = web.get("/releases?" + urllib.parse.urlencode({"q": ""}))
    total = re.search(r'<span id="total">(\d+)</span>', html)
    assert total is not None
    assert int(total.group(1)) == len(export["queries"]) == len(web.questions) + 1
    seqs = set()
    for page in (1, 2):
        _, html = web.get(f"/releases?page={page}")
        seqs |= {int(s) for s in re.findall(r'data-seq="(\d+)"', html)}
    assert seqs == {q["seq"] for q in export["queries"]}


def test_dataset_figures_equal_the_export(web: WebService) -> None:
    export = web.export()
    (dataset,) = export["datasets"]
    _, html = web.get("/")
    spent = re.search(r'data-spent-units="(\d+)">epsilon ([\d.]+)<', html)
    cap = re.search(r'data-cap-units="(\d+)">epsilon ([\d.]+)<', html)
    assert spent is not None
    assert cap is not None
    assert int(spent.group(1)) == dataset["spent_units"]
    assert Decimal(spent.group(2)) == Decimal(dataset["spent"]) == Decimal("1.25")
    assert int(cap.group(1)) == dataset["cap_units"]
    assert Decimal(cap.group(2)) == Decimal(dataset["cap"])
    by_seq = {q["seq"]: q for q in export["queries"]}
    for page in (1, 2):
        _, html = web.get(f"/releases?page={page}")
        for seq, units in re.findall(r'data-seq="(\d+)">.*?data-spend-units="(\d+)"', html, re.S):
            assert int(units) == by_seq[int(seq)]["spend_units"]


def test_questions_are_in_words(web: WebService) -> None:
    _, html = web.get("/releases?page=1")
    _, more = web.get("/releases?page=2")
    for question in web.questions:
        assert question in html + more


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/no/such/page", 404, "Not Found"),
        ("/datasets/no_such_dataset", 404, "no dataset"),
        ("/releases?page=abc", 400, "page must be a whole number"),
        ("/releases?page=999", 400, "past the last page"),
        ("/releases?color=red", 400, "unknown parameter"),
        ("/releases?q=a&q=b", 400, "given twice"),
        ("/releases?q=" + "x" * 300, 400, "longer than 200"),
        ("/releases?q=" + "x" * 5000, 400, "longer than 1024 bytes"),
        ("/releases?q=%ff%fe", 400, "not valid percent-encoded UTF-8"),
        ("/audit/heads/99999.json", 404, "no signed head"),
    ],
)
def test_bad_input_gets_a_clear_status(
    web: WebService, path: str, status: int, message: str
) -> None:
    got, body = web.get(path)
    assert got == status
    assert message in body


def test_public_part_is_read_only(web: WebService) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert web.post("/", b"x=1", form)[0] == 405
    assert web.post("/releases", b"x=1", form)[0] == 405
    status, body = web.post("/admin/login", b"token=x", form)
    assert status == 403
    assert "login form expired" in body
    other_site = {**form, "Origin": "https://attacker.example"}
    assert web.post("/admin/login", b"token=x", other_site)[0] == 403


def test_admin_page_refuses_without_a_token_and_works_with_a_bearer_header(web: WebService) -> None:
    status, body = web.get("/admin")
    assert status == 401
    assert "Administrators only" in body
    assert web.get("/admin", {"Authorization": f"Bearer {web.tokens['analyst']}"})[0] == 401
    status, body = web.get("/admin", {"Authorization": f"Bearer {web.tokens['admin']}"})
    assert status == 200
    assert 'data-requester="analyst-1"' in body


def test_security_headers_forbid_scripts_and_framing(web: WebService) -> None:
    with urllib.request.urlopen(web.base_url + "/", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src" not in policy
        assert response.headers["X-Frame-Options"] == "DENY"


def test_plaintext_web_pages_are_refused_off_loopback(small_dataset, tmp_path: Path) -> None:
    settings = web_settings(small_dataset.path.parents[2], tmp_path)
    settings = settings.model_copy(update={"web": WebSettings(enabled=True, address="0.0.0.0:0")})
    with (
        Ledger.open_sqlite(tmp_path / "ledger.sqlite") as ledger,
        pytest.raises(StartupError, match="without TLS"),
    ):
        start_web(settings, ledger, None)
