"""The web UI of atomr serve in a real headless Chromium (Debian's package, driven by Playwright).

Skipped where no ``chromium`` binary is installed or Playwright's Python package
is missing (Playwright's own browser download is never used). With
``ATOMR_SCREENSHOTS=1`` the screenshots go to ``docs/img/`` (runs.png, run.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from atomr import Runtime, demo
from test_server_support import GATE, T, TOKEN, runtime, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium) to run the UI tests",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the UI tests need Playwright's Python package "
                               "(pip install playwright; its browser download is not needed)")

pytestmark = pytest.mark.timeout(180)

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
MS = int(T * 1000)
BIG = {"order_id": "A-7", "items": [{"sku": "desk", "qty": 2, "cents": 45_000}]}
SMALL = {"order_id": "A-8", "items": [{"sku": "pen", "qty": 3, "cents": 300}]}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    pg = context.new_page()
    pg.set_default_timeout(MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], errors


@pytest.fixture
def site():
    GATE.set()
    rt = runtime()
    rt.register(demo.workflow)
    with serve(rt, token=TOKEN, modules={"orders": "examples.order_pipeline:workflow"}) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=T, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield srv.url, c


def login(page, url: str) -> None:
    """The UI asks for the token once (the API answered 401) and keeps it for the tab."""
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-token", TOKEN)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login", state="hidden")


def shot(page, name: str, tmp_path: Path) -> Path:
    target = DOCS_IMG / name if os.environ.get("ATOMR_SCREENSHOTS") == "1" else tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    return target


def test_a_paused_run_is_answered_in_the_form_and_finishes(site, page, tmp_path):
    url, c = site
    assert c.post("/api/workflows/orders/runs", json={"input": BIG, "run_id": "order-big"}).status_code == 201
    login(page, f"{url}/runs/orders/order-big")
    page.wait_for_selector("#run-status:text('paused')")
    page.wait_for_selector("g.node[data-step=approve][data-status=waiting]")
    assert page.get_attribute("g.node[data-step=validate]", "data-status") == "done"
    assert page.get_attribute("g.node[data-step=fulfil]", "data-status") == "pending"
    form = page.locator("form.interrupt")
    assert "approve this order?" in form.locator("pre").inner_text()
    assert page.locator("#timeline li").count() == 4
    page.locator("#timeline li", has_text="layer:2").first.click()  # what the parallel layer changed
    page.wait_for_selector("#cp-diff tr.changed")
    shot(page, "run.png", tmp_path)
    page.locator("#timeline li").last.click()  # back to the latest: the page follows the run again
    # a value that is not JSON is refused in the page; nothing is sent
    form.locator("textarea").fill("yes please")
    form.locator("button").click()
    page.wait_for_selector("#flash.error:text('not JSON')")
    assert c.get("/api/runs/orders/order-big").json()["status"] == "paused"
    form.locator("textarea").fill('"yes"')
    form.locator("button").click()
    page.wait_for_selector("#run-status:text('done')")
    page.wait_for_selector("g.node[data-step=fulfil][data-status=done]")
    assert page.locator("#interrupts-box").is_hidden()
    assert page.locator("#btn-cancel").is_hidden()
    assert "shipped" in page.inner_text("#cp-values") or '"approved": true' in page.inner_text("#cp-values")
    view = c.get("/api/runs/orders/order-big").json()
    assert view["status"] == "done" and view["values"]["approved"] is True
    # a checkpoint of the timeline: its state and what changed from the one before
    page.locator("#timeline li", has_text="layer:2").first.click()
    assert "super-step 2" in page.inner_text("#cp-title")
    changed = page.locator("#cp-diff tr.added th, #cp-diff tr.changed th").all_inner_texts()
    assert "total" in changed and "reserved" in changed


def test_runs_page_filters_and_follows_new_runs(site, page, tmp_path):
    url, c = site
    for i in range(3):
        c.post("/api/workflows/orders/runs", json={"input": SMALL, "run_id": f"order-{i}"})
    c.post("/api/workflows/orders/runs", json={"input": BIG, "run_id": "order-big"})
    c.post("/api/workflows/failing/runs", json={"input": {}, "run_id": "fails-1"})
    for run in ("order-0", "order-1", "order-2", "order-big"):
        c.get(f"/api/runs/orders/{run}/wait", params={"timeout": T})
    GATE.clear()
    try:
        c.post("/api/workflows/gated/runs", json={"input": {"n": 1}, "run_id": "busy-1"})
        login(page, url)
        page.wait_for_selector("tr[data-run=order-big]")
        page.wait_for_selector("tr[data-run=fails-1] .badge:text('failed')")
        page.wait_for_selector("tr[data-run=busy-1] .badge:text('running')")
        assert page.locator("tr[data-run]").count() == 6
        shot(page, "runs.png", tmp_path)
    finally:
        GATE.set()
    page.wait_for_selector("tr[data-run=busy-1] .badge:text('done')")  # live: the table follows the run
    # live: a run started now appears without a reload
    c.post("/api/workflows/approval/runs", json={"input": {"topic": "live"}, "run_id": "late"})
    page.wait_for_selector("tr[data-run=late]")
    page.select_option("#f-status", "paused")
    page.wait_for_function("() => [...document.querySelectorAll('tr[data-run] .badge')]"
                           ".every(b => b.textContent === 'paused') && document.querySelectorAll('tr[data-run]')"
                           ".length === 2")  # order-big and late
    assert page.url.endswith("/?status=paused")
    page.select_option("#f-status", "")
    page.select_option("#f-workflow", "failing")
    page.wait_for_function("() => document.querySelectorAll('tr[data-run]').length === 1")
    page.click("tr[data-run=fails-1] a")
    page.wait_for_selector("g.node[data-step=boom][data-status=failed]")
    assert "ValueError" in page.inner_text("#run-error")
    page.click("#run-traceback-box summary")  # the step's traceback, its own frames
    tb = page.inner_text("#run-traceback")
    assert "in _boom" in tb and "ValueError: boom" in tb and "atomr/actors" not in tb
    assert page.locator("#btn-continue").inner_text() == "Retry"


def test_fork_and_cancel_buttons(site, page):
    url, c = site
    c.post("/api/workflows/approval/runs", json={"input": {"topic": "ui"}, "run_id": "src"})
    c.get("/api/runs/approval/src/wait", params={"timeout": T})
    login(page, f"{url}/runs/approval/src")
    page.wait_for_selector("#timeline li")
    page.locator("#timeline li", has_text="layer:1").first.click()
    page.click("#btn-fork")
    page.wait_for_url("**/runs/approval/src-fork-*")
    page.wait_for_selector("#run-status:text('paused')")
    assert "forked from src@1" in page.inner_text("#run-facts")
    new_id = page.url.rsplit("/", 1)[1]
    assert c.get(f"/api/runs/approval/{new_id}").json()["meta"]["forked_from"] == "src@1"
    # the fork waits before review: Continue runs it up to review's interrupt
    page.click("#btn-continue")
    page.wait_for_selector("form.interrupt")
    if not hasattr(Runtime, "acancel"):
        return  # this runtime cannot cancel runs: the server answers 501 (see test_server_api)
    page.goto(f"{url}/runs/approval/src")
    page.wait_for_selector("#run-status:text('paused')")
    page.once("dialog", lambda d: d.accept("no longer needed"))
    page.click("#btn-cancel")
    page.wait_for_selector("#run-status:text('cancelled')")
    assert c.get("/api/runs/approval/src").json()["status"] == "cancelled"


def test_workflows_page_draws_each_workflow_and_starts_a_run(site, page):
    url, c = site
    c.post("/api/workflows/orders/runs", json={"input": SMALL, "run_id": "w-1"})
    login(page, f"{url}/workflows")
    card = page.locator("#wf-orders")
    card.locator("g.node[data-step=fulfil]").wait_for()
    assert card.locator("g.node").count() == 6
    assert "examples.order_pipeline:workflow" in card.inner_text()
    card.locator("ul.recent a", has_text="w-1").wait_for()
    approval = page.locator("#wf-approval")
    approval.locator("textarea").fill('{"topic": "from the page"}')
    approval.locator("button[type=submit]").click()
    page.wait_for_url("**/runs/approval/*")
    page.wait_for_selector("form.interrupt")
    run = page.url.rsplit("/", 1)[1]
    assert c.get(f"/api/runs/approval/{run}").json()["values"]["topic"] == "from the page"
