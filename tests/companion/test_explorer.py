"""The book's addition explorer in headless Chromium: it draws the exported edges, switches problems, describes
an edge on hover and fades the heads outside the circuit; and it fetches nothing."""

import json
import shutil

import pytest

from companion.bookcheck import Chromium, find_chromium, serve
from companion.results import REPO_ROOT
from spartan_core.studies.explorer import AdditionExplorer

STATIC = REPO_ROOT / "book" / "_static"


def explorer():
    problems = [
        {"text": "53+21=00074", "carry": "none", "paper": True,
         "dense": [[0, 0, 6, 0, 0.5], [0, 1, 6, 3, 0.25], [2, 3, 10, 5, 0.1]],
         "sparse": [[0, 0, 6, 0, 0.9], [1, 2, 9, 4, 0.6]]},
        {"text": "43+59=00102", "carry": "both", "paper": False,
         "dense": [[1, 0, 7, 1, 0.3]], "sparse": [[3, 1, 10, 2, 1.0], [1, 2, 9, 4, 0.7], [0, 0, 7, 0, 0.4]]},
    ]
    return AdditionExplorer(problems, {"dense": ["a0.h0", "a0.h1"], "sparse": ["a1.h2"]}, 0.9, 4, 4, 0.02, 0)


def test_the_exported_data_round_trips_through_the_page():
    page = explorer().to_html()
    data = page.split('class="explorer-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")) == explorer().to_dict()
    assert explorer().edges_drawn().to_dict("list") == {"problem": ["53+21=00074", "43+59=00102"],
                                                        "carry": ["none", "both"], "paper": [True, False],
                                                        "dense": [3, 1], "sparse": [2, 3]}


@pytest.fixture(scope="module")
def browser():
    try:
        find_chromium()
    except FileNotFoundError as err:
        pytest.fail(str(err))
    chromium = Chromium()
    yield chromium
    chromium.close()


def test_the_explorer_draws_switches_describes_and_filters(browser, tmp_path):
    for name in ("explorer.js", "explorer.css"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="explorer.css"><script src="explorer.js"></script>'
        f"</head><body>{explorer().to_html()}</body></html>")
    with serve(tmp_path) as base:
        browser.events.clear()
        browser.call("Page.navigate", url=base + "index.html")
        browser.wait_for("Page.loadEventFired")
        count = "n => document.querySelectorAll(`.explorer-${n} line.explorer-edge`).length"
        assert browser.evaluate("document.querySelector('.addition-explorer').dataset.ready") == "true"
        assert browser.evaluate(f"[({count})('dense'), ({count})('sparse')]") == [3, 2]
        levels = browser.evaluate("Array.from(document.querySelectorAll('.explorer-dense .explorer-layer'))"
                                  ".map(t => t.textContent)")
        assert levels == ["emb"] + [f"L{layer}" for layer in range(explorer().layers)], "chapter 5's level labels"
        assert browser.evaluate("Array.from(document.querySelectorAll('.explorer-legend-item'))"
                                ".map(i => i.textContent)") == [f"head {h}" for h in range(explorer().heads)]
        browser.evaluate("(() => { const s = document.querySelector('.explorer-problem'); s.value = '1';"
                         " s.dispatchEvent(new Event('change')); })()")
        assert browser.evaluate(f"[({count})('dense'), ({count})('sparse')]") == [1, 3]
        tooltip = browser.evaluate(
            "(() => { document.querySelector('.explorer-sparse line.explorer-edge')"
            ".dispatchEvent(new MouseEvent('mouseover')); return document.querySelector('.explorer-tooltip')"
            ".textContent; })()")
        assert tooltip == "sparse · layer 3 · head 1 · query 10 '2' ← key 2 '+' · weight 1.000"
        browser.evaluate("(() => { const c = document.querySelector('.explorer-circuit'); c.checked = true;"
                         " c.dispatchEvent(new Event('change')); })()")
        assert browser.evaluate("document.querySelectorAll('.explorer-sparse line.faded').length") == 2
        caption = browser.evaluate("document.querySelector('.explorer-sparse .explorer-caption').textContent")
        assert caption == "sparse: 1 of 3 edges drawn (weight ≥ 0.02); circuit heads at 90 %: a1.h2"
        requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
        assert all(url.startswith(base) for url in requests), requests
