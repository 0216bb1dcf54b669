"""Assemble and build the companion book: chapters, the table of claims, the table of runs, the HTML.

* :func:`publish_chapter` copies an executed notebook into ``book/chapters/`` and tags its parameter cells
  ``remove-cell`` (the parameters a chapter ran with are printed by its first code cell instead).
* :func:`write_generated` writes what the book's pages include: the front page's ledger table and hero figure (from
  :mod:`.ledger` and chapter 5's results), the ledger's rules and sentences, the appendix's tables of runs and
  weights, the GPU and memory tables, each chapter's provenance box and the citation. A profile that has not been
  run shows "pending", never a number, and a paper-profile result that did not run on a GPU says where it ran.
* :func:`build` regenerates those tables and runs ``jupyter-book build -W -n --keep-going`` (offline).

``python -m companion.book build [--output DIR]`` is what ``make book`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from spartan_core._util import atomic_write_text

from .ledger import ledger_details_markdown, ledger_rows, ledger_table_markdown, ledger_verdicts_markdown
from .results import REPO_ROOT, read_metrics, results_root
from .tables import book_profiles, forced_device, markdown_table, profile_results

__all__ = [
    "BOOK_DIR",
    "publish_chapter",
    "toc_files",
    "runs_markdown",
    "write_generated",
    "build",
]

BOOK_DIR = REPO_ROOT / "book"
_HIDDEN_TAGS = ("parameters", "injected-parameters")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
def _is_stderr(output) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


def publish_chapter(executed: Path, chapters_dir: Path) -> Path:
    """Copy a finished executed notebook into the book, hiding papermill's parameter cells, dropping widget
    outputs (progress bars: a page holding widget state loads the widget manager from a CDN, which an offline
    book cannot reach, and their text fallback is the bar frozen where it started), dropping stderr streams
    (library warnings and progress-bar text are debris to a reader; the executed notebook in ``book/executed/``
    keeps them) and keeping only repository-relative paths in papermill's metadata."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if any(tag in tags for tag in _HIDDEN_TAGS) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if not _is_stderr(o)
                            and ("data" not in o or o["data"] and _WIDGET_VIEW not in o["data"])]
    add_provenance_cell(nb, Path(executed).stem)
    papermill_meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in papermill_meta:
            path = Path(papermill_meta[key])
            papermill_meta[key] = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else path.name
    target = Path(chapters_dir) / Path(executed).name
    atomic_write_text(target, nbformat.writes(nb))
    return target


PROVENANCE_TAG = "provenance-box"


def add_provenance_cell(nb, chapter: str) -> None:
    """End the chapter with its provenance and downloads box (once): a markdown cell that includes the box
    :func:`provenance_markdown` writes at each build, so it always shows the results the page was built from; its
    fixed cell id keeps a chapter published again from the same run byte for byte the same."""
    import nbformat

    if any(PROVENANCE_TAG in cell.get("metadata", {}).get("tags", []) for cell in nb.cells):
        return
    source = (f"````{{admonition}} Provenance and downloads\n:class: note\n"
              f"```{{include}} ../_generated/provenance/{chapter}.md\n```\n````")
    nb.cells.append(nbformat.v4.new_markdown_cell(source, id=PROVENANCE_TAG, metadata={"tags": [PROVENANCE_TAG]}))


def chapter_profile(chapter_path: Path) -> str | None:
    """The profile a published chapter was executed with (its papermill parameters say)."""
    import nbformat

    nb = nbformat.read(str(chapter_path), as_version=4)
    return nb.metadata.get("papermill", {}).get("parameters", {}).get("profile")


def provenance_markdown(chapter: str, profile: str | None, root: Path, book_dir: Path = BOOK_DIR) -> str:
    """Which code, machine and parameters produced a chapter, and links to download its results files (paths
    relative to the chapter's page, where Sphinx resolves them)."""
    folder = Path(root) / str(profile) / chapter
    data = read_metrics(folder)
    prov = data.get("provenance")
    if not prov:
        return f"No finished results folder for this chapter under the `{profile}` profile.\n"
    device = prov.get("device", {})
    commit = (prov.get("git_commit") or "unknown")[:10] + (" (modified working tree)" if prov.get("git_dirty") else "")
    parameters = ", ".join(f"`{k}={v}`" for k, v in sorted(prov.get("parameters", {}).items()))
    lines = [f"Profile `{profile}`, commit `{commit}`, {device.get('type', '?')} ({device.get('name', '?')}, "
             f"{device.get('threads', '?')} threads), wall time {prov.get('wall_time_s', '?')} s, finished "
             f"{prov.get('finished_utc', '?')}.", "", f"Parameters: {parameters or 'none'}.", "", "Results files:"]
    relative = Path(os.path.relpath(Path(folder).resolve(), (Path(book_dir) / "chapters").resolve()))
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".csv", ".json", ".png"))
    lines.append(" · ".join(f"{{download}}`{name} <{(relative / name).as_posix()}>`" for name in files))
    lines += ["", f"The executed notebook: {{download}}`{chapter}.ipynb <{chapter}.ipynb>`. To run it again with these "
              "parameters (models come from the cache, or from `models/` after `make reproduce` imported them):", "",
              f"```bash\npython -m companion.runner --profile {profile} --only {chapter}\n```\n"]
    return "\n".join(lines)


def toc_files(book_dir: Path = BOOK_DIR) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root included), without suffix."""
    toc = yaml.safe_load((Path(book_dir) / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(entries: Iterable[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return found


def runs_markdown(root: Path) -> str:
    """Provenance of every results folder the ledger read, one table per profile: which code, where, how long."""
    header = ["Notebook", "Status", "Git commit", "Device", "Wall time (s)", "Finished (UTC)"]
    parts = []
    for profile in book_profiles(root):
        lines = []
        for notebook, data in profile_results(root, profile):
            prov = data.get("provenance", {})
            commit = (prov.get("git_commit") or "unknown")[:10] + (" (modified)" if prov.get("git_dirty") else "")
            device = prov.get("device", {})
            wall = prov.get("wall_time_s")
            lines.append([
                notebook, prov.get("status", "unknown"), commit,
                f"{device.get('type', '?')}: {device.get('name', '?')}{forced_device(profile, data)}",
                "?" if wall is None else f"{wall:.0f}",
                (prov.get("finished_utc") or "not finished").replace("T", " ").removesuffix("+00:00")])
        if lines:
            parts.append(f"**The `{profile}` profile**\n\n" + markdown_table(header, lines))
    return "\n\n".join(parts) + "\n" if parts else "No results have been written yet: run `make reproduce`.\n"


def models_markdown(root: Path) -> str:
    """Which weights produced the numbers, one table per results folder: every model it used, with its weights'
    SHA-256 (first 12 hex digits), training seed, and the threads and device it trained on. Two rows that show the
    same hash come from the same model."""
    header = ["Model", "Kind", "Seed", "SHA-256 of weights", "Trained on", "Threads", "Training (s)"]
    parts = []
    for profile in book_profiles(root):
        for notebook, data in profile_results(root, profile):
            lines = []
            for model in data.get("provenance", {}).get("models", []):
                trained = (f"{model['device']}: {model['device_name']}" if model.get("device")
                           else model.get("source") or "not trained here")
                wall = model.get("train_wall_time_s")
                lines.append([
                    model["model"], model["kind"], "–" if model.get("seed") is None else model["seed"],
                    f"`{model['weights_sha256'][:12]}`" if model.get("weights_sha256") else "not hashed",
                    trained, "–" if model.get("threads") is None else model["threads"],
                    "–" if wall is None else f"{wall:.0f}"])
            if lines:
                parts.append(f"**`{notebook}`, `{profile}` profile**\n\n" + markdown_table(header, lines))
    return "\n\n".join(parts) + "\n" if parts else "No results file records its models yet: run `make reproduce`.\n"


def gpu_markdown(root: Path) -> str:
    """What ``make gpu-check`` measured (results/benchmarks/gpu_check/), or a plain "not yet measured"."""
    data = read_metrics(root / "benchmarks" / "gpu_check")
    metrics = data.get("metrics", {})
    if not metrics.get("steps"):
        return ("Not yet measured: no GPU machine has run `make gpu-check` for this project, so there are no GPU "
                "times or memory figures to show here.\n")
    prov = data.get("provenance", {})
    header = ["Model (random init)", "Attention", "Parameters", "Micro-batch x accumulation", "Tokens/s",
              "Step (s)", "Peak memory (GiB)", "Fits the cap"]
    rows = []
    for model, runs in metrics["steps"].items():
        for mode in ("dense_sdpa", "sparse"):
            run = runs[mode]
            peak = run.get("peak_gib")
            rows.append([
                model, "dense (SDPA)" if mode == "dense_sdpa" else "sparse (gated)", f"{run['parameters'] / 1e6:.0f} M",
                f"{run['micro_batch']} x {run['grad_accum']}", f"{run['tokens_per_s']:.0f}", f"{run['step_s']:.2f}",
                "–" if peak is None else f"{peak:.1f}", "–" if run.get("fits_cap") is None else
                ("yes" if run["fits_cap"] else "no")])
    return (f"Measured by `make gpu-check` on {metrics.get('machine', '?')} at commit "
            f"`{(prov.get('git_commit') or 'unknown')[:10]}`, T = {prov.get('parameters', {}).get('seq_len', '?')}, "
            f"memory cap {prov.get('parameters', {}).get('memory_cap_gib', '?')} GiB:\n\n"
            + markdown_table(header, rows) + "\n")


# (row label, model, LoRA rank or None, processes, sharded, micro-batch rows, activation checkpointing) at T = 1024
PLANNED_RUNS = (
    ("GPT-2 small, every weight", "gpt2-small", None, 1, False, 8, False),
    ("OLMo-2 7B, its LoRA recipe", "allenai/OLMo-2-1124-7B", 16, 1, False, 1, False),
    ("OLMo-2 7B, its LoRA recipe", "allenai/OLMo-2-1124-7B", 16, 1, False, 4, False),
    ("OLMo-2 7B, every weight", "allenai/OLMo-2-1124-7B", None, 1, False, 4, False),
    ("OLMo-2 7B, every weight", "allenai/OLMo-2-1124-7B", None, 8, True, 4, False),
    ("OLMo-2 7B, every weight", "allenai/OLMo-2-1124-7B", None, 8, True, 4, True),
)


def memory_markdown() -> str:
    """The memory estimate (``spartan_core.training.memory``) of the planned runs of :data:`PLANNED_RUNS`, computed
    from the models' configs at each build: what ``python -m spartan_core estimate-memory`` prints for them."""
    from transformers import GPT2Config

    from spartan_core import zoo
    from spartan_core.training.memory import GIB, estimate_from_config

    local = {"gpt2-small": GPT2Config()}  # GPT-2 small's shapes are transformers' defaults: no hub needed
    header = ["Run (processes)", "Micro-batch rows", "Trainable", "Weights", "Gradients, AdamW", "Activations, logits",
              "Total"]
    lines = []
    for label, name, rank, processes, sharded, rows, checkpointing in PLANNED_RUNS:
        e = estimate_from_config(local.get(name) or zoo.model_config(name), lora_rank=rank, seq_len=1024,
                                 micro_batch=rows, processes=processes, sharded=sharded,
                                 activation_checkpointing=checkpointing)
        layout = f"{processes} process{'es' if processes > 1 else ''}" + (", sharded" if sharded else "")
        layout += ", activation checkpointing" if checkpointing else ""
        parts = e.parts
        lines.append([
            f"{label} ({layout})", rows, f"{e.trainable / 1e6:,.1f} M", f"{parts['weights'] / GIB:.1f}",
            f"{(parts['gradients'] + parts['optimiser']) / GIB:.1f}",
            f"{(parts['activations'] + parts['logits']) / GIB:.1f}", f"**{e.total / GIB:.1f}**"])
    return ("Sizes in GiB per process; a micro-batch row is 1,024 tokens.\n\n" + markdown_table(header, lines)
            + "\n")


HERO_CHAPTER, HERO_FILE = "05_addition", "figure1_hero.png"


def hero_figure(out: Path, root: Path) -> list[Path]:
    """The front page's figure: chapter 5's Figure 1 for one problem, dense beside sparse, copied from the CPU
    profile's results with a caption written from the same results (``hero.md``); a sentence where it has not run."""
    folder = Path(root) / "tiny" / HERO_CHAPTER
    data = read_metrics(folder)
    if data.get("provenance", {}).get("status") != "complete" or not (folder / HERO_FILE).exists():
        return [atomic_write_text(out / "hero.md", "The front page's figure appears once chapter 5 has run "
                                                   "(`make reproduce`).\n")]
    image = out / "hero.png"
    image.write_bytes((folder / HERO_FILE).read_bytes())
    first = data["metrics"]["per_seed"][0]
    drawn = first["figure1_edges_drawn"][-1]
    seed = data["metrics"]["seeds"][0]
    min_weight = data["provenance"]["parameters"]["min_weight"]
    caption = (f"The paper's Figure 1, redrawn from this repository's two-digit-addition toy (training seed {seed}) "
               f"for `{drawn['problem']}` (carry: {drawn['carry']}). Left, the dense model: {drawn['dense']} attention "
               f"edges of weight ≥ {min_weight}. Right, its sparse post-trained copy: {drawn['sparse']}. Tokens run "
               "left to right, the residual stream upwards, one colour per head; chapter 5 draws the paper's three "
               "problems and tests what the picture suggests on every held-out problem.")
    figure = f"```{{figure}} _generated/hero.png\n:name: fig-hero\n:alt: {drawn['problem']}, dense and sparse\n\n{caption}\n```\n"
    return [image, atomic_write_text(out / "hero.md", figure)]


def citation_markdown(repo: Path = REPO_ROOT) -> str:
    """The companion's BibTeX entry: the version of ``pyproject.toml``, and the commit the book is built from with
    its date (so two builds of one commit cite alike)."""
    import tomllib

    version = tomllib.loads((Path(repo) / "pyproject.toml").read_text())["project"]["version"]
    found = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%H %cs"], capture_output=True, text=True)
    commit, date = found.stdout.split() if found.returncode == 0 and found.stdout.strip() else ("unknown", "unknown")
    return ("```bibtex\n@software{spartan_core,\n"
            "  title   = {spartan\\_core: a reproduction companion for sparse attention post-training},\n"
            "  author  = {{spartan\\_core contributors}},\n"
            f"  version = {{{version}}},\n  date    = {{{date}}},\n"
            f"  note    = {{Commit {commit}; library, parameterised notebooks and book, every number from the "
            "committed results files}\n}\n```\n")


def write_generated(book_dir: Path = BOOK_DIR, root: Path | None = None) -> list[Path]:
    """Write ``_generated/verdicts.md``, ``ledger.md``, ``ledger_details.md``, ``hero.md`` (and its image), ``citation.md``,
    ``runs.md``, ``models.md``, ``gpu.md`` (from the results) and ``memory.md`` (the memory estimate of the planned
    GPU runs)."""
    book_dir = Path(book_dir)
    root = Path(root or results_root())
    chapters = {p.stem for p in (book_dir / "chapters").glob("*.ipynb")}
    chapters &= {Path(f).name for f in toc_files(book_dir) if f.startswith("chapters/")}
    out = book_dir / "_generated"
    for chapter in sorted(chapters):
        atomic_write_text(out / "provenance" / f"{chapter}.md",
                          provenance_markdown(chapter, chapter_profile(book_dir / "chapters" / f"{chapter}.ipynb"), root,
                                              book_dir))
    rows = ledger_rows(book_dir / "claims.yaml", root)
    return [
        atomic_write_text(out / "verdicts.md", ledger_verdicts_markdown(rows)),
        atomic_write_text(out / "ledger.md", ledger_table_markdown(rows, chapters)),
        atomic_write_text(out / "ledger_details.md", ledger_details_markdown(rows)),
        *hero_figure(out, root),
        atomic_write_text(out / "citation.md", citation_markdown()),
        atomic_write_text(out / "runs.md", runs_markdown(root)),
        atomic_write_text(out / "models.md", models_markdown(root)),
        atomic_write_text(out / "gpu.md", gpu_markdown(root)),
        atomic_write_text(out / "memory.md", memory_markdown()),
    ]


def _jupyter_book() -> str:
    local = Path(sys.executable).parent / "jupyter-book"
    found = str(local) if local.exists() else shutil.which("jupyter-book")
    if not found:
        raise FileNotFoundError("jupyter-book is not installed: run `make setup`")
    return found


def build(book_dir: Path = BOOK_DIR, output: Path | None = None, root: Path | None = None) -> Path:
    """Regenerate the tables and build the HTML book (warnings are errors); returns the html folder."""
    book_dir = Path(book_dir)
    for entry in toc_files(book_dir):
        if not any((book_dir / f"{entry}{suffix}").exists() for suffix in (".md", ".ipynb")):
            name = Path(entry).name
            hint = f"run `make notebook NB={name}`" if entry.startswith("chapters/") else "restore it"
            raise FileNotFoundError(f"book: {entry} is in _toc.yml but missing: {hint}")
    write_generated(book_dir, root)
    output = Path(output or book_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [_jupyter_book(), "build", str(book_dir), "--path-output", str(output), "-W", "-n", "--keep-going",
         "--all"],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-20000:] + done.stderr[-20000:])
        raise RuntimeError(f"book: jupyter-book build failed with status {done.returncode} (log above)")
    return output / "_build" / "html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.book")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tables", help="regenerate book/_generated/{claims,runs,models}.md from results/")
    build_cmd = sub.add_parser("build", help="regenerate the tables and build the HTML book")
    build_cmd.add_argument("--output", type=Path, default=None, help="output root (default: book/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "tables":
            for path in write_generated():
                print(path)
        else:
            print(build(output=args.output) / "index.html")
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
