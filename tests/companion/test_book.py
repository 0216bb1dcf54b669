"""The book: chapters are published with their parameter cells hidden, the claims table is generated from
results files (pending where a profile has not run), the book builds with warnings as errors, and every page
opens in headless Chromium without errors, missing images or broken internal links, and links leave the book
only for the allowlisted citations.

The build uses a temporary copy of ``book/`` with the committed chapters and ``results/``; screenshots of every
page go to ``artifacts/screenshots/`` for a person to look at.
"""

import html as html_text
import json
import re
import shutil

import nbformat
import pytest

from companion import book, bookcheck, tables
from spartan_core.claims import Claim
from companion.results import REPO_ROOT, ResultsDir, read_metrics

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


def test_publish_chapter_hides_parameter_cells_and_drops_progress_bars(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("seed = 3", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(seed)"),
    ]
    bar = nbformat.v4.new_output("display_data", data={"text/plain": "progress 3/3",
                                                       "application/vnd.jupyter.widget-view+json": {"model_id": "x"}})
    widget_only = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {}})
    nb.cells[2].outputs = [bar, widget_only]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    executed = tmp_path / "executed" / "01_x.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, str(executed))
    published = book.publish_chapter(executed, tmp_path / "chapters")
    first = published.read_bytes()
    assert book.publish_chapter(executed, tmp_path / "chapters").read_bytes() == first, "publishing is repeatable"
    chapter = nbformat.read(str(published), as_version=4)
    assert [c.metadata.get("tags", []) for c in chapter.cells] == [
        ["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], [], [book.PROVENANCE_TAG]]
    assert "widgets" not in chapter.metadata, "widget state makes the page load the widget manager from a CDN"
    assert chapter.cells[2].outputs == [], "a progress bar's text fallback is the bar frozen where it started"


def test_publish_chapter_drops_stderr_but_the_executed_notebook_keeps_it(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("train()")]
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something in a library\n"),
        nbformat.v4.new_output("stream", name="stdout", text="kept 2.8 % of edges\n"),
        nbformat.v4.new_output("stream", name="stderr", text="100%|##########| 3000/3000\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "0.97"}, execution_count=1),
    ]
    executed = tmp_path / "executed" / "02_x.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, str(executed))
    chapter = nbformat.read(str(book.publish_chapter(executed, tmp_path / "chapters")), as_version=4)
    assert [(o.output_type, o.get("name")) for o in chapter.cells[0].outputs] == [
        ("stream", "stdout"), ("execute_result", None)]
    assert len(nbformat.read(str(executed), as_version=4).cells[0].outputs) == 4


def test_the_ledger_reads_finished_results_and_labels_a_gpu_profile_run_that_was_not_on_a_gpu(tmp_path, monkeypatch):
    from companion import results as results_mod
    from companion.ledger import ledger_details_markdown, ledger_rows, ledger_table_markdown

    for profile, notebook, device in [("paper", "02_fake", "cpu"), ("paper", "03_fake", "cuda"),
                                      ("tiny", "04_fake", "cpu")]:
        monkeypatch.setattr(results_mod, "_device", lambda device=device: {"type": device, "name": "chip"})
        run = ResultsDir(profile, notebook, {}, root=tmp_path)
        claim = "edges_kept" if notebook != "03_fake" else "mechanism"
        run.claim(Claim(claim, f"measured in {notebook}", {}, "partly", "a rule", f"{notebook} numbers"))
        run.finish()
    legacy = tmp_path / "tiny" / "05_fake"  # a folder an older writer left mid-run: never shown
    legacy.mkdir()
    (legacy / "metrics.json").write_text(json.dumps({"provenance": {"status": "running"},
                                                     "claims": {"addition_circuit": {"summary": "half done"}}}))
    rows = ledger_rows(REPO_ROOT / "book" / "claims.yaml", tmp_path)
    table = ledger_table_markdown(rows, chapters={"04_fake"})
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    edges = lines["2. Few edges at the original loss"]
    assert edges[2:] == ["04_fake numbers", "{bdg-warning}`partly`", "{bdg-warning}`partly` (ran on cpu, forced)",
                         "{doc}`04 </chapters/04_fake>`, 02 |"]
    assert lines["1. The gate: softmax times a binary mask"][3:5] == ["{bdg-light}`pending`", "{bdg-warning}`partly`"]
    assert lines["4. Addition toy reads like an algorithm"][2:4] == ["not run yet", "{bdg-light}`pending`"]
    assert "half done" not in table
    details = ledger_details_markdown(rows)
    assert ("Ours, on the CPU profile: measured in 04_fake (chapter 04). On the `paper` profile (ran on cpu, forced): "
            "measured in 02_fake (chapter 02). Rule: a rule.") in details
    runs = {line.split(" | ")[0].lstrip("| "): line for line in book.runs_markdown(tmp_path).splitlines()
            if line.startswith("| ")}
    assert " cpu: chip (ran on cpu, forced) " in runs["02_fake"]
    assert " cuda: chip |" in runs["03_fake"] and " cpu: chip |" in runs["04_fake"]


def test_the_front_page_table_counts_the_verdicts_and_waits_for_a_gpu_profile_that_has_not_run(tmp_path):
    from companion.ledger import ledger_rows, ledger_table_markdown, ledger_verdicts_markdown

    done = ResultsDir("tiny", "01_fake", {}, root=tmp_path)
    done.claim(Claim("mechanism", "open gates exact", {}, "reproduced", "a rule", "logits within 0"))
    done.finish()
    rows = ledger_rows(REPO_ROOT / "book" / "claims.yaml", tmp_path)
    table = ledger_table_markdown(rows, chapters=set())
    assert ledger_verdicts_markdown(rows).startswith("Verdicts on the CPU profile (`tiny`): 1 reproduced, 8 pending, 1 not attempted. The "
                            "`paper` profile has not run on a GPU yet")
    header = table.splitlines()[0]
    assert "Verdict: paper" not in header and "Verdict: tiny" in header, "no column for a profile that judged nothing"
    assert "| 1. The gate: softmax times a binary mask | exact by construction | logits within 0 |" in table


def test_build_refuses_a_missing_chapter(tmp_path):
    shutil.copytree(REPO_ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build", "executed"))
    for chapter in (tmp_path / "book" / "chapters").glob("*.ipynb"):
        chapter.unlink()
    with pytest.raises(FileNotFoundError, match=r"^book: chapters/01_gated_attention is in _toc.yml but missing: "
                                                r"run `make notebook NB=01_gated_attention`$"):
        book.build(tmp_path / "book")


def _page(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>")


def test_link_check_passes_internal_links_and_the_allowlist(tmp_path):
    _page(tmp_path / "intro.html", '<a href="chapters/01_x.html#a-section">1</a> <a href="#top">top</a> '
                                   '<a href="https://arxiv.org/abs/2512.05865">the paper</a> <a href="chapters/">c</a>')
    _page(tmp_path / "chapters" / "01_x.html", '<a href="../intro.html">back</a> <a href="../_images/f.png">f</a>')
    _page(tmp_path / "chapters" / "index.html", "")
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "f.png").write_bytes(b"png")
    assert bookcheck.check_links(tmp_path) == []


def test_link_check_fails_links_that_leave_the_book_and_dead_internal_links(tmp_path):
    _page(tmp_path / "intro.html", '<a href="https://example.org/x">x</a> <a href="mailto:a@b.c">mail</a> '
                                   '<a href="https://arxiv.org/abs/2512.05865v2">another version</a> '
                                   '<a href="chapters/nowhere.html#s">dead</a> <a href="../outside.html">up</a>')
    _page(tmp_path / "chapters" / "01_x.html", '<a href="//cdn.example.org/lib.js">cdn</a>')
    assert sorted(bookcheck.check_links(tmp_path)) == sorted([
        "intro.html: link leaves the book: https://example.org/x",
        "intro.html: link leaves the book: mailto:a@b.c",
        "intro.html: link leaves the book: https://arxiv.org/abs/2512.05865v2",
        "intro.html: dead link: chapters/nowhere.html#s",
        "intro.html: link leaves the book: ../outside.html",
        "chapters/01_x.html: link leaves the book: //cdn.example.org/lib.js",
    ])
    assert bookcheck.main([str(tmp_path), "--links-only"]) == 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The committed book, built into a temporary folder (warnings are errors)."""
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(REPO_ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build", "executed"))
    html = book.build(root / "book", output=root / "out")
    return root / "book", html


@pytest.mark.slow
def test_book_builds_with_every_toc_page_and_generated_tables(built):
    book_dir, html = built
    for entry in book.toc_files(book_dir):
        assert (html / f"{entry}.html").exists(), entry

    def text(page):  # as a reader sees it: entities decoded, and the typographic apostrophe of smart quotes
        return " ".join(html_text.unescape(re.sub(r"<[^>]+>", " ", (html / page).read_text())).replace("\u2019", "'")
                        .split())

    intro, ledger, provenance = text("intro.html"), text("ledger.html"), text("provenance.html")
    assert "has not run on a GPU yet" in intro and "Verdicts on the CPU profile" in intro
    for claim in book.yaml.safe_load((book_dir / "claims.yaml").read_text()):
        assert claim["short"] in intro and claim["claim"].replace("`", "") in ledger  # code spans lose their ticks
    for folder in sorted(p for p in (REPO_ROOT / "results" / "tiny").glob("*/") if not p.name.startswith(".")):
        data = read_metrics(folder)
        for claim in data.get("claims", {}).values():
            assert " ".join(claim["summary"].split()) in ledger, f"{folder.name}: claim missing from the ledger"
            assert claim.get("headline", "") in intro
        assert folder.name in provenance, "the runs table lists every results folder"
    assert "Parameters: " in (html / "chapters" / "01_gated_attention.html").read_text()
    assert "profile = " not in (html / "chapters" / "01_gated_attention.html").read_text()


@pytest.mark.slow
def test_every_page_opens_in_chromium_without_problems(built):
    _, html = built
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    pages, problems = bookcheck.check_site(html, SCREENSHOTS)
    assert problems == []
    assert {"intro.html", "rerun.html", "chapters/01_gated_attention.html"} <= set(pages)
    shots = sorted(p.name for p in SCREENSHOTS.glob("*.png"))
    assert len(shots) == len(pages)
    assert all((SCREENSHOTS / s).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for s in shots)


@pytest.mark.slow
def test_browser_check_catches_a_missing_image_and_a_broken_link(built, tmp_path):
    _, html = built
    site = tmp_path / "site"
    shutil.copytree(html, site)
    intro = site / "intro.html"
    image = re.search(r'<img [^>]*src="(_images/[^"]+)"', intro.read_text()).group(1)  # the front page's figure
    (site / image).unlink()
    intro.write_text(intro.read_text().replace("</article>", '<a href="chapters/nowhere.html">x</a>'
                                               '<a href="rerun.html#no-such-id">y</a>'
                                               f'<pre style="white-space: pre">{"wide " * 60}</pre></article>', 1))
    chapter_2 = site / "chapters" / "02_sparsity_loss_curves.html"
    drawn = re.search(r'<img [^>]*src="(data:image/png;base64,[^"]+)"', chapter_2.read_text()).group(1)
    planted = (f'<table><tr>{"<td>wide_column_name</td>" * 40}</tr></table>'
               f'<img src="{drawn}" style="width: 40px">')  # a chapter's figure, shrunk, with no caption
    chapter_2.write_text(chapter_2.read_text().replace("</article>", planted + "</article>", 1))
    _, problems = bookcheck.check_site(site)
    joined = "\n".join(problems)
    assert "image did not load: " in joined and image in joined
    assert "intro.html: dead link: chapters/nowhere.html" in joined
    assert "no id 'no-such-id' on rerun.html" in joined
    assert "intro.html: a code block scrolls sideways (longest line starts 'wide wide" in joined
    assert "chapters/02_sparsity_loss_curves.html: a table is " in joined and "'wide_column_name wide" in joined
    small = [p for p in problems if p.startswith("chapters/02_sparsity_loss_curves.html: a figure is shown at")]
    assert len(small) == 1 and small[0].endswith("(an inline image)")
    assert "chapters/02_sparsity_loss_curves.html: a figure has no caption (an inline image)" in joined


def _facts(**changes):
    facts = {"column": 688, "tables": [{"width": 600, "head": "a b"}], "words": 900,
             "figures": [{"src": "f.png", "shown": 688, "natural": 1000, "caption": "Figure 1: what to see."}]}
    return {**facts, **changes}


def test_layout_rules_pass_a_page_that_fits_and_name_each_defect():
    assert bookcheck.layout_problems("intro.html", _facts()) == []
    assert bookcheck.layout_problems("intro.html", _facts(tables=[{"width": 700, "head": "x y"}])) == [
        "intro.html: a table is 700 px wide in a 688 px column (first row 'x y')"]
    small = {"src": "f.png", "shown": 500, "natural": 1000, "caption": "Figure 2: x."}
    assert bookcheck.layout_problems("a.html", _facts(figures=[small])) == [
        "a.html: a figure is shown at 50% of its drawn width (f.png)"]
    wide = {"src": "w.png", "shown": 900, "natural": 900, "caption": "Figure 3: x."}
    assert bookcheck.layout_problems("a.html", _facts(figures=[wide])) == [
        "a.html: a figure is 900 px wide in a 688 px column (w.png)"]
    bare = {"src": "g.png", "shown": 600, "natural": 600, "caption": ""}
    assert bookcheck.layout_problems("a.html", _facts(figures=[bare])) == ["a.html: a figure has no caption (g.png)"]
    assert bookcheck.layout_problems("intro.html", _facts(words=1201)) == [
        "intro.html: the front page has 1201 words (at most 1200)"]
    assert bookcheck.layout_problems("ledger.html", _facts(words=5000)) == []


@pytest.mark.slow
def test_the_built_book_links_only_inside_itself_and_to_the_allowlist(built):
    _, html = built
    assert bookcheck.check_links(html) == []
    assert "https://arxiv.org/abs/2512.05865" in (html / "method.html").read_text()


def test_results_files_list_the_models_they_used_and_the_book_shows_their_hashes(tmp_path):
    from spartan_core.zoo import LoadedModel
    from spartan_core.zoo.loaded import used

    def fake(name, sha, seed, **info):
        return used(LoadedModel(name=name, model=None, tokenizer=None, data={}, info={
            "weights_sha256": {"model.safetensors": sha}, "seed": seed, "train_wall_time_s": 12.3,
            "trained_on": {"device": "cpu", "device_name": "Some CPU", "threads": 2, "torch": "x"}, **info}))

    fake("before-the-run", "0" * 64, 0)  # loaded before this results folder existed: not its model
    run = ResultsDir("tiny", "02_fake", {}, root=tmp_path)
    fake("addition-4l", "ab" * 32, 1)
    fake("addition-4l", "cd" * 32, 1, recipe={}, tau=0.01)
    run.record(x=1)
    models = run.finish()["provenance"]["models"]
    assert [(m["model"], m["kind"], m["seed"], m["threads"]) for m in models] == [
        ("addition-4l", "dense", 1, 2), ("addition-4l", "sparse", 1, 2)]
    table = book.models_markdown(tmp_path)
    assert table.startswith("**`02_fake`, `tiny` profile**\n\n| Model | Kind | Seed |")
    assert "| addition-4l | dense | 1 | `abababababab` | cpu: Some CPU | 2 | 12 |" in table
    assert "`cdcdcdcdcdcd`" in table and "before-the-run" not in table


def test_the_gpu_table_says_not_yet_measured_until_gpu_check_has_run(tmp_path):
    from companion.results import ResultsDir

    assert book.gpu_markdown(tmp_path).startswith("Not yet measured: no GPU machine has run `make gpu-check`")
    run = {"parameters": 124_439_808, "micro_batch": 8, "grad_accum": 2, "tokens_per_s": 51234.4, "step_s": 0.32,
           "peak_gib": 41.25, "fits_cap": True}
    results = ResultsDir("benchmarks", "gpu_check", {"seq_len": 1024, "memory_cap_gib": 80}, root=tmp_path)
    results.record(machine="NVIDIA H200", steps={"gpt2-small": {"dense_sdpa": run, "sparse": {**run, "fits_cap": False}}})
    results.finish()
    table = book.gpu_markdown(tmp_path)
    assert "T = 1024, memory cap 80 GiB" in table
    assert "| gpt2-small | dense (SDPA) | 124 M | 8 x 2 | 51234 | 0.32 | 41.2 | yes |" in table
    assert "| gpt2-small | sparse (gated) | 124 M | 8 x 2 | 51234 | 0.32 | 41.2 | no |" in table


def test_the_memory_table_is_the_estimate_of_each_planned_run(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the planned models' configs come from transformers and the registry
    rows = [line for line in book.memory_markdown().splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(book.PLANNED_RUNS)
    totals = [float(row.rsplit("|", 2)[-2].strip(" *")) for row in rows]
    lora, _, full, sharded, checkpointed = totals[1:]
    assert lora < 80 < full and checkpointed < sharded < full
    assert rows[1].startswith("| OLMo-2 7B, its LoRA recipe (1 process) | 1 | 16.8 M | 27.3 |")
    assert rows[5].startswith("| OLMo-2 7B, every weight (8 processes, sharded, activation checkpointing) | 4 |")


def test_every_chapter_ends_with_its_provenance_box_and_links_its_results(tmp_path):
    import nbformat

    for chapter in sorted((REPO_ROOT / "book" / "chapters").glob("*.ipynb")):
        cells = nbformat.read(str(chapter), as_version=4).cells
        assert [c for c in cells if book.PROVENANCE_TAG in c.metadata.get("tags", [])] == [cells[-1]], chapter.name
    run = ResultsDir("tiny", "05_fake", {"seed": 3}, root=tmp_path)
    run.table("per_seed", __import__("pandas").DataFrame({"seed": [3]}))
    run.finish()
    box = book.provenance_markdown("05_fake", "tiny", tmp_path, book_dir=tmp_path / "book")
    assert "Profile `tiny`, commit `" in box and "Parameters: `seed=3`." in box
    assert "{download}`per_seed.csv <../../tiny/05_fake/per_seed.csv>`\n" in box
    assert "The executed notebook: {download}`05_fake.ipynb <05_fake.ipynb>`" in box
    assert box.rstrip().endswith("```bash\npython -m companion.runner --profile tiny --only 05_fake\n```")
    assert book.provenance_markdown("06_fake", "tiny", tmp_path).startswith("No finished results folder")
    nb = nbformat.v4.new_notebook()
    for _ in range(2):
        book.add_provenance_cell(nb, "05_fake")
    assert len(nb.cells) == 1 and "../_generated/provenance/05_fake.md" in nb.cells[0].source


def test_the_companion_citation_names_the_version_and_the_commit_the_book_was_built_from():
    import subprocess
    import tomllib

    entry = book.citation_markdown()
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert entry.startswith("```bibtex\n@software{spartan_core,") and entry.endswith("}\n```\n")
    assert f"version = {{{version}}}" in entry and f"Commit {head.strip()};" in entry
