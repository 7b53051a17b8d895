"""The course site of the smoke-preset run, read in a real browser (Debian's Chromium, headless, offline).

Every page loads with no console error and no request leaving the machine, its equations are typeset
(no raw TeX left in the visible text), every figure has a size, search finds a term of notebook 06,
and previous / next walk all lessons in order. Screenshots of two pages are kept in
``reports/test_artifacts/``. Under CI (``CI=true``) a missing browser fails the test instead of
skipping it; ``.ci/run`` installs Chromium with apt-get.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from nbhelpers.runner import discover
from nbhelpers.site import run_header

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "reports" / "test_artifacts"
LESSONS = [p.stem for p in discover(ROOT / "notebooks")]
RAW_TEX = re.compile(r"\$[^$\n]*[\\^_{}][^$\n]*\$|\\\(|\\\)")  # $...$ holding TeX, or \( \) delimiters


def chromium() -> str:
    """Path of the system Chromium (``playwright install`` downloads from outside and fails here)."""
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if found is None:
        message = "Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(smoke_reports):
    """The smoke site served on 127.0.0.1 (``(base URL, site folder)``)."""
    folder = smoke_reports[0] / "site"
    assert (folder / "index.html").is_file(), "nbhelpers run built no course site"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-background-networking"])
        yield launched
        launched.close()


class Visit:
    """One page load with its console errors and every request that is not to the local server."""

    def __init__(self, browser, base: str, path: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.outside = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:", "about:"))
                     else self.outside.append(r.url))
        self.page.goto(base + path, wait_until="load")
        self.page.evaluate("() => new Promise(done => window.MathJax && MathJax.Hub ? MathJax.Hub.Queue(() => done(1)) : done(0))")

    def visible_text(self) -> str:
        """The article's text outside code and math (what a reader sees as prose)."""
        return self.page.evaluate("""() => {
            const main = (document.querySelector('article') || document.body).cloneNode(true);
            main.querySelectorAll('pre, code, script, .MathJax_MathML, .MathJax_Preview').forEach(e => e.remove());
            return main.innerText; }""")


def test_every_page_loads_offline_with_typeset_math_and_sized_figures(site, browser):
    base, folder = site
    pages = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.html") if "_static" not in p.parts)
    assert {f"notebooks/{name}.html" for name in LESSONS} <= set(pages)
    typeset = 0
    for path in pages:
        visit = Visit(browser, base, path)
        assert not visit.errors, f"{path}: console errors {visit.errors}"
        assert not visit.outside, f"{path}: requests leaving the machine {visit.outside}"
        raw = RAW_TEX.findall(visit.visible_text())
        assert not raw, f"{path}: untypeset TeX {raw[:5]}"
        typeset += visit.page.locator(".MathJax_MathML math").count()
        sizes = visit.page.evaluate("() => [...document.images].map(i => [i.src.slice(0, 60), i.naturalWidth, i.naturalHeight])")
        assert all(w > 0 and h > 0 for _, w, h in sizes), f"{path}: empty figures {[s for s in sizes if not s[1]]}"
        if path == "notebooks/06_fod.html":
            assert len(sizes) >= 3 and "This run:" in visit.page.inner_text("article")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            visit.page.screenshot(path=str(ARTIFACTS / "site_06_fod.png"), full_page=False)
        if path == "index.html":
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            visit.page.screenshot(path=str(ARTIFACTS / "site_index.png"), full_page=True)
        visit.page.close()
    assert typeset > 20, "almost no equation was typeset"
    assert (ARTIFACTS / "site_06_fod.png").stat().st_size > 10_000


def test_search_finds_a_term_of_notebook_06(site, browser):
    base, _ = site
    visit = Visit(browser, base, "search.html?q=correlations")
    visit.page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    links = visit.page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
    assert any("06_fod" in link for link in links), links
    assert not visit.errors and not visit.outside


def test_next_and_previous_walk_the_lessons_in_order(site, browser):
    base, _ = site
    visit = Visit(browser, base, f"notebooks/{LESSONS[0]}.html")
    walked = [LESSONS[0]]
    while len(walked) < len(LESSONS):
        visit.page.click("a.right-next")
        visit.page.wait_for_load_state("load")
        walked.append(Path(visit.page.url.split("#")[0]).stem)
    assert walked == LESSONS
    back = []
    while len(back) < len(LESSONS) - 1:
        visit.page.click("a.left-prev")
        visit.page.wait_for_load_state("load")
        back.append(Path(visit.page.url.split("#")[0]).stem)
    assert back == LESSONS[-2::-1]


def test_run_header_names_the_time_preset_and_metrics():
    header = run_header({"status": "ok", "seconds": 125.2, "preset": "cpu", "finished": "2026-12-07T20:00:00+00:00",
                         "metrics": {"fod_image_auroc": 0.9979, "rows": [{}, {}]}})
    assert "2 min 5 s" in header and "`cpu`" in header and "2 result rows" in header and "0.998" in header
    failed = run_header({"status": "failed", "failed_cell": 4, "seconds": 3, "preset": "smoke", "metrics": {}})
    assert "**failed** (cell 4)" in failed and "3 s" in failed
