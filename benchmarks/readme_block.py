"""Rewrite the README's benchmark block from results/benchmarks/*/metrics.json (never by hand)."""

from __future__ import annotations

import re
from pathlib import Path

from spartan_core.results import REPO_ROOT, read_metrics, results_root

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def block() -> str:
    lines = []
    for folder in sorted((results_root() / "benchmarks").glob("*/")):
        metrics = read_metrics(folder)
        if metrics.get("metrics", {}).get("line"):
            commit = (metrics["provenance"].get("git_commit") or "unknown")[:10]
            lines.append(f"    {metrics['metrics']['line']}  [commit {commit}]")
    if not lines:
        return "No benchmark has been run yet: `make bench`."
    return "Measured by `make bench` (one process per benchmark, interleaved repeats, median):\n\n" + "\n".join(lines)


def main() -> None:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {START} ... {END} block")
    readme.write_text(pattern.sub(f"{START}\n{block()}\n{END}", text))


if __name__ == "__main__":
    main()
