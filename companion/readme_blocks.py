"""Rewrite the README's generated blocks (never by hand): the benchmark lines from results/benchmarks/*/ and the
measured claims of the tiny profile from results/tiny/*/, each between its start/end markers.
``python -m companion.readme_blocks`` is the last step of ``make bench``."""

from __future__ import annotations

import re

from .results import REPO_ROOT, read_metrics, results_root


def _commit(metrics: dict) -> str:
    return (metrics["provenance"].get("git_commit") or "unknown")[:10]


def benchmarks_block() -> str:
    lines = []
    for folder in sorted(f for f in (results_root() / "benchmarks").glob("*/") if not f.name.startswith(".")):
        metrics = read_metrics(folder)
        if metrics.get("metrics", {}).get("line"):
            lines.append(f"    {metrics['metrics']['line']}  [commit {_commit(metrics)}]")
    if not lines:
        return "No benchmark has been run yet: `make bench`."
    if not (results_root() / "benchmarks" / "gpu_check" / "metrics.json").is_file():
        lines.append("    GPU check (`make gpu-check`): pending, no GPU machine has been lent to this project yet")
    return "Measured by `make bench` (one process per benchmark, interleaved repeats, median):\n\n" + "\n".join(lines)


def results_block(profile: str = "tiny") -> str:
    lines = []
    for folder in sorted(f for f in (results_root() / profile).glob("*/") if not f.name.startswith(".")):
        metrics = read_metrics(folder)
        provenance = metrics["provenance"]
        if provenance.get("status") != "complete":
            continue
        for claim_id, claim in metrics.get("claims", {}).items():
            summary = " ".join(claim["summary"].split())
            device = provenance.get("device", {})
            where = f"{device.get('type', '?')} {device.get('name', '')}".strip()
            lines.append(f"- **{claim_id}** ({folder.name}, {where}, commit {_commit(metrics)}): {summary}")
    if not lines:
        return f"The {profile} profile has not been run yet: `make reproduce PROFILE={profile}`."
    return (f"Measured by `make reproduce PROFILE={profile}` (from `results/{profile}/*/metrics.json`; the book sets "
            "each beside the paper's number):\n\n" + "\n".join(lines))


def timing_block(profile: str = "tiny") -> str:
    """Where the time of ``make reproduce`` goes: each notebook's wall time in the run that wrote it (a warm model
    cache makes it short), and the first-use training time of every model it used, each model counted once
    (what a fresh clone pays on top)."""
    rows, trained, seen = [], 0.0, set()
    for folder in sorted(f for f in (results_root() / profile).glob("*/") if not f.name.startswith(".")):
        provenance = read_metrics(folder)["provenance"]
        if provenance.get("status") != "complete":
            continue
        own = 0.0
        for model in provenance.get("models", []):
            key = model.get("weights_sha256") or model.get("model")
            if key not in seen and model.get("train_wall_time_s"):
                seen.add(key)
                own += model["train_wall_time_s"]
        trained += own
        rows.append(f"    {folder.name:<26} notebook {provenance.get('wall_time_s', 0) / 60:5.1f} min   "
                    f"first-use training of its new models {own / 60:5.1f} min")
    if not rows:
        return f"The {profile} profile has not been run yet: `make reproduce PROFILE={profile}`."
    notebooks = sum(read_metrics(f)["provenance"].get("wall_time_s", 0)
                    for f in (results_root() / profile).glob("*/") if not f.name.startswith("."))
    return (f"Where the time of `make reproduce PROFILE={profile}` goes (from `results/{profile}/*/metrics.json`: "
            "notebook wall times of the run that wrote them, and the recorded training time of each model they "
            "used, counted once):\n\n" + "\n".join(rows) +
            f"\n\n    total: notebooks {notebooks / 60:.1f} min + first-use training {trained / 60:.1f} min")


BLOCKS = {"benchmarks": benchmarks_block, "results": results_block, "timing": timing_block}


def main() -> None:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    for name, make in BLOCKS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {start} ... {end} block")
        text = pattern.sub(lambda _: f"{start}\n{make()}\n{end}", text)
    readme.write_text(text)


if __name__ == "__main__":
    main()
