"""The pages in a real browser: Debian's headless Chromium driven by Selenium.

Selenium is given /usr/bin/chromium and /usr/bin/chromedriver explicitly (SE_OFFLINE set),
so it never downloads a browser or a driver; scripts/ci-packages.sh installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from .conftest import WebService

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/work/screenshot-public.png")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "browser tests need Debian's chromium and chromium-driver:"
            " bash scripts/test.sh installs them when run as root"
        )
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(browser: webdriver.Chrome, condition: Callable[[webdriver.Chrome], bool]) -> None:
    """Wait for a page a click or a submit loads (clicks do not wait for navigation)."""
    WebDriverWait(browser, 15).until(condition)


def _rows(browser: webdriver.Chrome) -> list[dict[str, str]]:
    rows = []
    for row in browser.find_elements(By.CSS_SELECTOR, "tr.release"):

        def cell(name: str, row: WebElement = row) -> str:
            return str(row.find_element(By.CSS_SELECTOR, f"td.{name}").text)

        rows.append(
            {
                "seq": row.get_attribute("data-seq") or "",
                "purpose": cell("purpose"),
                "agreement": cell("agreement"),
                "question": cell("question"),
                "spend": cell("spend"),
                "cells": cell("cells"),
                "version": cell("version"),
            }
        )
    return rows


def test_releases_table_shows_exactly_the_releases_made(
    web: WebService, browser: webdriver.Chrome
) -> None:
    export = web.export()
    shown: list[dict[str, str]] = []
    browser.get(web.base_url + "/releases")
    while True:
        shown += _rows(browser)
        following = browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
        if not following:
            break
        current = browser.current_url
        following[0].click()
        _wait(browser, lambda d, before=current: d.current_url != before)
    assert sorted(int(r["seq"]) for r in shown) == sorted(q["seq"] for q in export["queries"])
    charged = [r for r in shown if r["spend"] != "free (repeat)"]
    assert sorted(r["question"] for r in charged) == sorted(web.questions)
    by_seq = {q["seq"]: q for q in export["queries"]}
    assert all(r["purpose"] == "testing" for r in shown)
    assert all(r["agreement"] == "DSA-TEST" for r in shown)
    assert all(
        (r["purpose"], r["agreement"])
        == (by_seq[int(r["seq"])]["purpose"], by_seq[int(r["seq"])]["agreement"])
        for r in shown
    )
    assert all(r["version"] for r in shown)
    for row in charged:
        measure, amount = row["spend"].split(" ")
        assert measure == "epsilon"
        assert Decimal(amount) == Decimal(by_seq[int(row["seq"])]["spend"])
    months = [r for r in charged if r["question"].endswith("by month")]
    assert {r["cells"] for r in months} == {"12"}


def test_search_narrows_the_releases(web: WebService, browser: webdriver.Chrome) -> None:
    browser.get(web.base_url + "/releases")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("telephone")
    box.submit()
    _wait(browser, lambda d: "q=telephone" in d.current_url)
    rows = _rows(browser)
    assert [r["question"] for r in rows] == [web.questions[2]]
    assert "q=telephone" in browser.current_url


def test_spend_chart_has_the_releases_as_data(
    web: WebService, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(web.base_url + "/")
    series = browser.find_element(By.CSS_SELECTOR, "svg.chart polyline.series")
    points = (series.get_attribute("data-points") or "").split()
    assert len(points) == len(web.questions)
    values = [Decimal(p.rsplit("=", 1)[1]) for p in points]
    assert values == sorted(values)
    assert values[-1] == Decimal(web.export()["datasets"][0]["spent"])
    cap = browser.find_element(By.CSS_SELECTOR, "svg.chart line.cap").get_attribute("data-cap")
    assert Decimal(cap or "0") == Decimal(web.export()["datasets"][0]["cap"])
    shot = tmp_path / "public.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_COPY.parent.is_dir() and os.access(SCREENSHOT_COPY.parent, os.W_OK):
        shutil.copyfile(shot, SCREENSHOT_COPY)


def test_admin_pages_refuse_without_a_token_and_work_after_login(
    web: WebService, browser: webdriver.Chrome
) -> None:
    browser.delete_all_cookies()
    browser.get(web.base_url + "/admin")
    assert "Administrators only" in browser.page_source
    assert not browser.find_elements(By.ID, "allocations")

    browser.get(web.base_url + "/admin/login")
    browser.find_element(By.ID, "token").send_keys("dpg_wrong")
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: "not a valid administrator token" in d.page_source)

    browser.find_element(By.ID, "token").send_keys(web.tokens["admin"])
    browser.find_element(By.ID, "login").click()
    _wait(browser, lambda d: d.current_url == web.base_url + "/admin")
    assert web.tokens["admin"] not in browser.current_url
    allocation = browser.find_element(By.CSS_SELECTOR, 'tr.allocation[data-requester="analyst-1"]')
    assert allocation.find_element(By.CSS_SELECTOR, "td.remaining").text == "epsilon 3.75"
    assert browser.find_elements(By.CSS_SELECTOR, "#refusals tbody tr")
    cookie = browser.get_cookie("dpgate_admin_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    browser.find_element(By.ID, "logout").click()
    _wait(browser, lambda d: d.current_url == web.base_url + "/")
    browser.get(web.base_url + "/admin")
    assert "Administrators only" in browser.page_source
