"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Logs in with an analyst key, sees the four charts drawn with data points, changes a filter
and sees the chart change, sees suppressed cells marked (never drawn as zero), logs out,
and is sent back to the login page. Screenshots land in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import synced_fleet
from serving import make_keys, start_serve, stop_serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    _, store, _ = synced_fleet(root, users=1500, days=3, seed=5, small_countries=12)
    keys = make_keys(store)
    s = start_serve(store, root / "keys")
    s.keys = keys
    yield s
    stop_serve(s)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def test_dashboard_login_charts_filter_suppression_logout(served, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(served.url + "/")
    page.wait_for_url("**/login")  # unauthenticated: sent to the login page
    page.fill("#key", "vk_000000000000_" + "x" * 43)
    page.click("#login-button")
    page.wait_for_selector("#login-error:not(:empty)")
    page.fill("#key", served.keys["analyst"])
    page.click("#login-button")
    page.wait_for_url(served.url + "/")

    for kpi in (
        "device_activations",
        "connection_error_rate",
        "active_devices",
        "firmware_adoption",
    ):
        page.wait_for_selector(f"#chart-{kpi}[data-loaded] svg circle.point")
        assert page.locator(f"#chart-{kpi} svg circle.point").count() > 0, kpi
    ticks = page.locator("#chart-device_activations svg text.tick").all_text_contents()
    assert ticks and all(len(t) == 10 and t[4] == "-" for t in ticks)  # labelled by day
    labels = page.locator("#chart-device_activations svg text").all_text_contents()
    assert not any("." in t for t in labels if t[:1].isdigit() and "-" not in t)  # integer counts
    page.screenshot(path=str(ARTIFACTS / "dashboard-1-charts.png"), full_page=True)

    chart = page.locator("#chart-connection_error_rate")
    before = chart.locator("svg circle.point").count()
    series_before = chart.locator(".legend span").all_text_contents()
    chart.locator("select.by").select_option("country")
    page.wait_for_selector("#chart-connection_error_rate[data-loaded='2']")
    series_after = chart.locator(".legend span").all_text_contents()
    assert series_after != series_before and "(all)" in series_after
    marks = chart.locator("svg text.suppressed")
    assert marks.count() > 0  # the tiny countries' cells
    suppressed_series = set(marks.evaluate_all("ms => ms.map(m => m.dataset.series)"))
    points = chart.locator("svg circle.point").evaluate_all(
        "ps => ps.map(p => [p.dataset.series, p.dataset.period, Number(p.dataset.value)])"
    )
    marked = set(marks.evaluate_all("ms => ms.map(m => m.dataset.series + '|' + m.dataset.period)"))
    assert not {f"{s}|{p}" for s, p, _ in points} & marked  # a suppressed cell has no point
    assert suppressed_series and before != chart.locator("svg circle.point").count()
    page.screenshot(path=str(ARTIFACTS / "dashboard-2-by-country-suppressed.png"), full_page=True)

    only = chart.locator("select.only")
    values = only.locator("option").all_text_contents()
    only.select_option(values[1])
    page.wait_for_selector("#chart-connection_error_rate[data-loaded='3']")
    assert set(chart.locator(".legend span").all_text_contents()) <= {"(all)", values[1]}

    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(served.url + "/")
    page.wait_for_url("**/login")
    page.screenshot(path=str(ARTIFACTS / "dashboard-3-logged-out.png"))
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_admins_see_the_guard_and_its_failures_on_the_dashboard(served, browser):
    """An admin's dashboard shows every check; lowering protection (chmod 644 on the
    store) turns it red within the guard's interval and the panel's refresh."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(served.url + "/login")
    page.fill("#key", served.keys["admin"])
    page.click("#login-button")
    page.wait_for_url(served.url + "/")
    page.wait_for_selector("#guard[data-ok='true']")
    checks = page.locator("#guard-checks tr td:first-child").all_text_contents()
    assert {"store.modes", "audit.chain", "posture.approved", "api.exposure"} <= set(checks)
    assert page.locator("#charts section").count() == 0  # an admin reads no KPI
    served.store.chmod(0o644)
    try:
        page.wait_for_selector("#guard[data-ok='false']", timeout=20_000)
        row = page.locator("#guard-checks tr.FAIL").first
        assert "store.modes" in row.text_content() and "chmod" in row.text_content()
        page.screenshot(path=str(ARTIFACTS / "dashboard-4-guard-failing.png"), full_page=True)
    finally:
        served.store.chmod(0o600)
    page.wait_for_selector("#guard[data-ok='true']", timeout=20_000)
    page.close()
