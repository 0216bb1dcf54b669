"""Rewrite the README's generated blocks (never by hand): the benchmark lines from results/benchmarks/*/ and the
measured claims of the tiny profile from results/tiny/*/, each between its start/end markers.
``python -m companion.readme_blocks`` is the last step of ``make bench``."""

from __future__ import annotations

import json
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
    """Where the time goes in each tier: ``make reproduce`` from the published models (each notebook's wall time
    in the run that wrote it, the models imported, not trained), and ``make retrain`` from scratch (the recorded
    training time of every model a notebook used, each counted once, and the measured retrains of
    ``results/retrain/``)."""
    rows, trained, seen, notebooks = [], 0.0, set(), 0.0
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
        notebooks += provenance.get("wall_time_s", 0)
        rows.append(f"    {folder.name:<26} reproduce: notebook {provenance.get('wall_time_s', 0) / 60:5.1f} min   "
                    f"retrain: its new models {own / 60:5.1f} min")
    if not rows:
        return f"The {profile} profile has not been run yet: `make reproduce PROFILE={profile}`."
    retrains = []
    for path in sorted((results_root() / "retrain").glob(f"{profile}*.json")):
        report = json.loads(path.read_text())
        same = sum(m["identical"] for m in report["models"])
        scope = f"ONLY={report['only']} " if report.get("only") else ""
        retrains.append(f"    make retrain {scope}JOBS={report['jobs']}: {len(report['models'])} models in "
                        f"{report['wall_time_s'] / 60:.1f} min on {report['machine'].get('device_name', '?')}, "
                        f"{same} of {len(report['models'])} with weights identical to the published ones")
    return (f"Where the time of each tier goes for PROFILE={profile} on the machine that wrote "
            f"`results/{profile}/*/metrics.json` (notebook wall times of the run that wrote them, with every model "
            "imported from `models/`; the recorded training time of each model the notebook used, counted once, "
            "which is what a retrain from scratch trains):\n\n" + "\n".join(rows) +
            f"\n\n    total: make reproduce {notebooks / 60:.1f} min of notebooks (plus set-up and the book); "
            f"make retrain {trained / 60:.1f} min of training, the sum of the models' recorded times (a model "
            "trained while other jobs shared the cores records more than it takes alone)" +
            ("\n\nMeasured retrains (`results/retrain/`):\n\n" + "\n".join(retrains) if retrains else ""))


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
