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


BLOCKS = {"benchmarks": benchmarks_block, "results": results_block}


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
