"""The rendered book as a reader sees it: every page of ``_build/html`` opened in headless Chromium.

One pass over the pages (served from 127.0.0.1, every other request blocked and recorded) collects
what the page's scripts left behind; the tests below check it: every formula typeset by the
MathJax copy the build ships (no raw TeX, no MathJax error), every image loaded with a non-zero
size, no console error or failed request, no request off the machine, every internal link and
equation reference resolving, eq-N shown as (N), no code block scrolling sideways, hidden check
cells hidden and shown by one click, each chapter offering its .ipynb. A screenshot of each page
goes to ``_build/screenshots/`` so a person can look at what the test saw.

Chromium: $CHROMIUM, else ``chromium``/``chromium-browser`` on PATH (Debian: ``apt-get install
chromium``), driven by Playwright for Python (the ``browser`` extra; Playwright's own browser
download is never used). Without a Chromium the whole module skips and says so.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("GAUGELIT_BOOK_BUILD", ROOT / "_build")).resolve()
HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if p.relative_to(HTML).parts[0] not in ("_static", "_sources", "_images"))
NOTEBOOK_PAGES = {p.relative_to(ROOT).with_suffix(".html").as_posix()
                  for p in (ROOT / "book").glob("*.md")
                  if re.search(r"^jupytext:", p.read_text(encoding="utf-8"), re.MULTILINE)}

# Flags for a closed network: without the background-networking ones Chromium's own update and
# sync connections are refused and logged; a fresh profile each run.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Raw TeX that MathJax should have replaced: \( \) \[ \] $$ or a \begin{...} environment.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")

COLLECT_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await document.fonts.ready;
  const visible = e => e.getClientRects().length > 0;
  const math = [...document.querySelectorAll('.math')];
  const skip = 'script,style,pre,code,textarea,mjx-container,.highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode(n) {
      const p = n.parentElement;
      return (!p || p.closest(skip)) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT; }});
  const texts = []; let n; while ((n = walker.nextNode())) { texts.push(n.nodeValue); }
  return {
    title: document.title,
    mathjax: !!(window.MathJax && MathJax.version), mathjaxVersion: window.MathJax ? MathJax.version : null,
    mathCount: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 100)),
    mathErrors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(
        e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 100)),
    texts: texts,
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, complete: i.complete,
        w: i.naturalWidth, h: i.naturalHeight, visible: visible(i),
        rw: i.getBoundingClientRect().width, rh: i.getBoundingClientRect().height})),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id).concat(
        [...document.querySelectorAll('a[name]')].map(e => e.getAttribute('name'))),
    links: [...document.querySelectorAll('a[href]')].map(a => ({href: a.href,
        raw: a.getAttribute('href'), text: a.textContent.trim(), headerlink: a.classList.contains('headerlink')})),
    equations: [...document.querySelectorAll('[id^="equation-"]')].map(d => {
        const eqno = d.querySelector('.eqno'); if (!eqno) { return {id: d.id, eqno: null}; }
        const shown = eqno.cloneNode(true); shown.querySelectorAll('.headerlink').forEach(a => a.remove());
        return {id: d.id, eqno: shown.textContent.trim()}; }),
    overflowing: [...document.querySelectorAll('div.highlight pre, div.cell_output pre')]
        .filter(p => visible(p) && p.scrollWidth > p.clientWidth + 1)
        .map(p => p.textContent.trim().slice(0, 100)),
  };
}
"""


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def rendered(build_dir):
    """Open every page once; return {page: what the browser saw}."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser test skipped: Playwright missing (pip install -e '.[browser]')")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("browser test skipped: no Chromium on this machine (Debian: apt-get install chromium; "
                    "or set CHROMIUM=/path/to/chromium)")
    assert PAGES, f"no pages under {HTML}"
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    seen = {}
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        current = {}

        def route(r):  # the book must need nothing but itself
            if r.request.url.startswith(origin + "/"):
                r.continue_()
            else:
                current["external"].append(r.request.url)
                r.abort()

        context.route("**/*", route)
        # Generous: a loaded 2-core CI machine can take tens of seconds to typeset a long page.
        context.set_default_timeout(180_000)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and current["console"].append(m.text))
        page.on("pageerror", lambda e: current["console"].append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: r.url.startswith(origin) and current["failed"].append(
            f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and current["failed"].append(f"{r.url}: HTTP {r.status}"))
        try:
            for name in PAGES:
                current.clear()
                current.update(external=[], console=[], failed=[])
                page.goto(f"{origin}/{name}", wait_until="load")
                try:  # late requests (fonts after typesetting) are still recorded by the handlers above
                    page.wait_for_load_state("networkidle", timeout=15_000)
                except sync_api.TimeoutError:
                    pass
                data = page.evaluate(COLLECT_JS)  # waits for MathJax's typesetting and the fonts
                data["url"] = page.url
                page.screenshot(path=str(SHOTS / (name.replace("/", "__")[:-5] + ".png")), full_page=True)
                data["hidden_cells"] = _hidden_cells_one_click_away(page)
                data.update(external=list(current["external"]), console=list(current["console"]),
                            failed=list(current["failed"]))
                seen[name] = data
        finally:
            context.close()
            server.shutdown()
    seen["__origin__"] = origin
    return seen


def _hidden_cells_one_click_away(page) -> list[str]:
    """Problems with the hide-input cells: input shown before a click, or not shown after one."""
    problems = []
    cells = page.locator(".cell.tag_hide-input")
    for i in range(cells.count()):
        cell = cells.nth(i)
        source = cell.locator(".cell_input")
        toggle = cell.locator("summary")
        if source.count() != 1 or toggle.count() < 1:
            problems.append(f"hide-input cell {i}: no input or no toggle")
            continue
        if source.is_visible():
            problems.append(f"hide-input cell {i}: source visible before any click")
            continue
        toggle.first.click()
        if not source.is_visible():
            problems.append(f"hide-input cell {i}: source still hidden after one click")
    return problems


def test_pages_found():
    assert "index.html" in PAGES
    missing = sorted(NOTEBOOK_PAGES - set(PAGES))
    assert not missing, f"chapters without a page: {missing}"


@pytest.mark.parametrize("name", PAGES)
def test_nothing_loaded_from_the_network(rendered, name):
    external = rendered[name]["external"]
    assert not external, "requests off the machine (blocked):\n" + "\n".join(external)


@pytest.mark.parametrize("name", PAGES)
def test_no_console_errors_or_failed_requests(rendered, name):
    page = rendered[name]
    assert not page["console"], "console errors:\n" + "\n".join(page["console"])
    assert not page["failed"], "failed requests:\n" + "\n".join(page["failed"])


@pytest.mark.parametrize("name", PAGES)
def test_every_formula_typeset(rendered, name):
    page = rendered[name]
    if page["mathCount"]:
        assert page["mathjax"], "page has formulas but MathJax did not start"
        assert page["mathjaxVersion"].startswith("3."), page["mathjaxVersion"]
    assert not page["untypeset"], "formulas left as TeX:\n" + "\n".join(page["untypeset"])
    assert not page["mathErrors"], "MathJax could not typeset:\n" + "\n".join(page["mathErrors"])
    raw = [t.strip()[:120] for t in page["texts"] if RAW_TEX.search(t)]
    assert not raw, "raw TeX in the page text:\n" + "\n".join(raw)


@pytest.mark.parametrize("name", PAGES)
def test_every_image_loaded(rendered, name):
    bad = [i["src"] for i in rendered[name]["images"]
           if not i["complete"] or i["w"] == 0 or i["h"] == 0
           or (i["visible"] and (i["rw"] == 0 or i["rh"] == 0))]
    assert not bad, "images not loaded or of zero size:\n" + "\n".join(bad)


def test_chapters_have_figures(rendered):
    """Guards the image check against a page that silently lost its figures."""
    with_images = [n for n in NOTEBOOK_PAGES if rendered[n]["images"]]
    assert len(with_images) >= len(NOTEBOOK_PAGES) // 2, with_images


@pytest.mark.parametrize("name", PAGES)
def test_internal_links_resolve(rendered, name):
    origin = rendered["__origin__"]
    broken = []
    for link in rendered[name]["links"]:
        url = urlsplit(link["href"])
        if f"{url.scheme}://{url.netloc}" != origin:
            continue  # external: not followed (and nothing was loaded from it)
        path = unquote(url.path).lstrip("/") or "index.html"
        if path.endswith("/"):
            path += "index.html"
        if not (HTML / path).is_file():
            broken.append(f"{link['raw']} -> missing file {path}")
        elif url.fragment and path in rendered and url.fragment not in rendered[path]["ids"]:
            broken.append(f"{link['raw']} -> no #{url.fragment} in {path}")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@pytest.mark.parametrize("name", PAGES)
def test_equations_carry_the_papers_numbers(rendered, name):
    page, origin = rendered[name], rendered["__origin__"]
    wrong = [f"{e['id']} shows {e['eqno']}" for e in page["equations"]
             if (m := re.fullmatch(r"equation-eq-(\d+)", e["id"])) and e["eqno"] != f"({m.group(1)})"]
    for link in page["links"]:
        url = urlsplit(link["href"])
        m = re.fullmatch(r"equation-eq-(\d+)", url.fragment)
        if (m and not link["headerlink"] and f"{url.scheme}://{url.netloc}" == origin
                and not re.search(rf"\b{m.group(1)}\b", link["text"])):
            wrong.append(f"reference to eq-{m.group(1)} reads {link['text']!r}")
    assert not wrong, "equation numbers that are not the paper's:\n" + "\n".join(wrong)


def test_the_paper_numbers_are_displayed(rendered):
    """At least the ledger's equations 10-37 are displayed somewhere, with their numbers."""
    shown = {int(m.group(1)) for n in PAGES for e in rendered[n]["equations"]
             if (m := re.fullmatch(r"equation-eq-(\d+)", e["id"]))}
    assert set(range(10, 38)) <= shown, sorted(set(range(10, 38)) - shown)


@pytest.mark.parametrize("name", PAGES)
def test_code_blocks_do_not_scroll_sideways(rendered, name):
    wide = rendered[name]["overflowing"]
    assert not wide, "code blocks wider than the page:\n" + "\n".join(wide)


@pytest.mark.parametrize("name", PAGES)
def test_hidden_check_cells_are_one_click_away(rendered, name):
    problems = rendered[name]["hidden_cells"]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(NOTEBOOK_PAGES))
def test_chapter_offers_its_notebook(rendered, name):
    ipynb = [link for link in rendered[name]["links"] if urlsplit(link["href"]).path.endswith(".ipynb")]
    assert ipynb, "no .ipynb download link"
    path = unquote(urlsplit(ipynb[0]["href"]).path).lstrip("/")
    notebook = json.loads((HTML / path).read_text(encoding="utf-8"))
    assert any(c["cell_type"] == "code" and c.get("outputs") for c in notebook["cells"]), \
        f"{path} has no outputs: not the executed notebook"
