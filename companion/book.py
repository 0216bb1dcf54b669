"""Assemble and build the companion book: chapters, the table of claims, the table of runs, the HTML.

* :func:`publish_chapter` copies an executed notebook into ``book/chapters/`` and tags its parameter cells
  ``remove-cell`` (the parameters a chapter ran with are printed by its first code cell instead).
* :func:`claims_markdown` / :func:`runs_markdown` write the tables that ``book/intro.md`` includes: the paper's
  numbers (typed from the paper, labelled as the paper's) next to what each profile's ``results/`` files say.
  A profile that has not been run shows "pending", never a number, and a paper-profile result that did not run on
  a GPU (a forced ``--allow-cpu`` run) says where it ran.
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

from .ledger import ledger_markdown
from .params import GPU_PROFILES
from .results import REPO_ROOT, read_metrics, results_root
from .tables import book_profiles, cell, chapter_link, profile_results

__all__ = [
    "BOOK_DIR",
    "publish_chapter",
    "toc_files",
    "claims_markdown",
    "runs_markdown",
    "write_generated",
    "build",
]

BOOK_DIR = REPO_ROOT / "book"
_HIDDEN_TAGS = ("parameters", "injected-parameters")
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_PENDING = {
    "tiny": "pending: not run yet (`make reproduce PROFILE=tiny`)",
    "paper": "pending: needs a GPU run (`make reproduce PROFILE=paper`)",
    "gpu": "pending: needs a GPU run (`make reproduce PROFILE=gpu`)",
}


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
    lines.append(" · ".join(f"{{download}}`{name} <{(relative / name).as_posix()}>`" for name in files) + "\n")
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


def _forced_device(profile: str, data: dict[str, Any]) -> str:
    """`` (ran on cpu, forced)`` for a paper-profile result that did not run on CUDA, so it never passes as a GPU
    result; empty otherwise."""
    if profile not in GPU_PROFILES:
        return ""
    kind = data.get("provenance", {}).get("device", {}).get("type")
    return "" if kind == "cuda" else f" (ran on {kind or 'an unknown device'}, forced)"


def claims_markdown(claims_path: Path, root: Path, chapters: set[str]) -> str:
    """The claims table: one row per claim of ``book/claims.yaml``, one measured column per book profile."""
    claims = yaml.safe_load(Path(claims_path).read_text())
    profiles = book_profiles(root)
    measured = {profile: profile_results(root, profile) for profile in profiles}
    header = ["Claim", "The paper reports", *(f"Measured: {label}" for label in profiles.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for claim in claims:
        row = [cell(claim["claim"]), cell(f"{claim['paper']} ({claim['source']})")]
        for profile in profiles:
            found = []
            for notebook, data in measured[profile]:
                entry = data.get("claims", {}).get(claim["id"])
                if entry is None:
                    continue
                state = data.get("provenance", {}).get("status")
                note = ("" if state == "complete" else f" ({state or 'unknown'} run)") + _forced_device(profile, data)
                found.append(f"{entry['summary']}{note} [nb {chapter_link(notebook, chapters)}]")
            if found:
                row.append(cell("; ".join(found)))
            elif claim.get("not_attempted"):
                row.append(cell(f"not attempted: {claim['not_attempted']}"))
            else:
                row.append(cell(_PENDING[profile]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def runs_markdown(root: Path) -> str:
    """Provenance of every results folder the claims table read: which code, where, how long."""
    header = ["Profile", "Notebook", "Status", "Git commit", "Device", "Wall time (s)", "Finished (UTC)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = 0
    for profile in book_profiles(root):
        for notebook, data in profile_results(root, profile):
            prov = data.get("provenance", {})
            commit = (prov.get("git_commit") or "unknown")[:10] + (" (modified)" if prov.get("git_dirty") else "")
            device = prov.get("device", {})
            lines.append("| " + " | ".join(cell(x) for x in [
                profile, notebook, prov.get("status", "unknown"), commit,
                f"{device.get('type', '?')}: {device.get('name', '?')}{_forced_device(profile, data)}",
                prov.get("wall_time_s", "?"),
                prov.get("finished_utc", "not finished"),
            ]) + " |")
            rows += 1
    if not rows:
        return "No results have been written yet: run `make reproduce`.\n"
    return "\n".join(lines) + "\n"


def models_markdown(root: Path) -> str:
    """Which weights produced the numbers: every model a results folder used, with its weights' SHA-256 (first
    12 hex digits), training seed, and the threads and device it trained on. Two results that show the same hash
    come from the same model."""
    header = ["Profile", "Notebook", "Model", "Kind", "Seed", "Weights SHA-256", "Trained on", "Threads",
              "Train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = 0
    for profile in book_profiles(root):
        for notebook, data in profile_results(root, profile):
            for model in data.get("provenance", {}).get("models", []):
                trained = (f"{model['device']}: {model['device_name']}" if model.get("device")
                           else model.get("source") or "not trained here")
                wall = model.get("train_wall_time_s")
                lines.append("| " + " | ".join(cell(x) for x in [
                    profile, notebook, model["model"], model["kind"],
                    "–" if model.get("seed") is None else model["seed"],
                    f"`{model['weights_sha256'][:12]}`" if model.get("weights_sha256") else "not hashed",
                    trained, "–" if model.get("threads") is None else model["threads"],
                    "–" if wall is None else f"{wall:.0f}",
                ]) + " |")
                rows += 1
    if not rows:
        return "No results file records its models yet: run `make reproduce`.\n"
    return "\n".join(lines) + "\n"


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
    lines = [f"Measured by `make gpu-check` on {metrics.get('machine', '?')} at commit "
             f"`{(prov.get('git_commit') or 'unknown')[:10]}`, T = {prov.get('parameters', {}).get('seq_len', '?')}, "
             f"memory cap {prov.get('parameters', {}).get('memory_cap_gib', '?')} GiB:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, runs in metrics["steps"].items():
        for mode in ("dense_sdpa", "sparse"):
            run = runs[mode]
            peak = run.get("peak_gib")
            lines.append("| " + " | ".join(cell(x) for x in [
                model, "dense (SDPA)" if mode == "dense_sdpa" else "sparse (gated)", f"{run['parameters'] / 1e6:.0f} M",
                f"{run['micro_batch']} x {run['grad_accum']}", f"{run['tokens_per_s']:.0f}", f"{run['step_s']:.2f}",
                "–" if peak is None else f"{peak:.1f}", "–" if run.get("fits_cap") is None else
                ("yes" if run["fits_cap"] else "no")]) + " |")
    return "\n".join(lines) + "\n"


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
    header = ["Run", "Processes", "Micro-batch (x 1,024 tokens)", "Trainable", "Weights", "Gradients + AdamW",
              "Activations + logits", "Total per process (GiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, name, rank, processes, sharded, rows, checkpointing in PLANNED_RUNS:
        e = estimate_from_config(local.get(name) or zoo.model_config(name), lora_rank=rank, seq_len=1024,
                                 micro_batch=rows, processes=processes, sharded=sharded,
                                 activation_checkpointing=checkpointing)
        layout = f"{processes}, sharded" if sharded else str(processes)
        layout += ", activation checkpointing" if checkpointing else ""
        parts = e.parts
        lines.append("| " + " | ".join([
            label, layout, str(rows), f"{e.trainable / 1e6:,.1f} M", f"{parts['weights'] / GIB:.1f}",
            f"{(parts['gradients'] + parts['optimiser']) / GIB:.1f}",
            f"{(parts['activations'] + parts['logits']) / GIB:.1f}", f"**{e.total / GIB:.1f}**"]) + " |")
    return "\n".join(lines) + "\n"


def write_generated(book_dir: Path = BOOK_DIR, root: Path | None = None) -> list[Path]:
    """Write ``_generated/ledger.md``, ``claims.md``, ``runs.md``, ``models.md``, ``gpu.md`` (from the results) and
    ``memory.md`` (the memory estimate of the planned GPU runs)."""
    book_dir = Path(book_dir)
    root = Path(root or results_root())
    chapters = {p.stem for p in (book_dir / "chapters").glob("*.ipynb")}
    chapters &= {Path(f).name for f in toc_files(book_dir) if f.startswith("chapters/")}
    out = book_dir / "_generated"
    for chapter in sorted(chapters):
        atomic_write_text(out / "provenance" / f"{chapter}.md",
                          provenance_markdown(chapter, chapter_profile(book_dir / "chapters" / f"{chapter}.ipynb"), root,
                                              book_dir))
    return [
        atomic_write_text(out / "ledger.md", ledger_markdown(book_dir / "claims.yaml", root, chapters)),
        atomic_write_text(out / "claims.md", claims_markdown(book_dir / "claims.yaml", root, chapters)),
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
