"""The claims ledger: one row per claim of ``book/claims.yaml`` with the verdict its chapter recorded.

The study that measures a claim judges it (:class:`spartan_core.claims.Claim`: reproduced, partly, not
reproduced, or cannot test here) and states its rule; the ledger only collects those records from the finished
results folders. A claim that no finished results folder judged is pending: not run yet on the CPU profile, or
waiting for a GPU on the paper profile; a claim that ``claims.yaml`` marks ``not_attempted`` says so, with why. The rule is printed next to its badge, so a reader can disagree with the
threshold rather than with a hidden judgement.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .params import GPU_PROFILES
from .tables import book_profiles, cell, chapter_link, profile_results

__all__ = ["STATUSES", "claim_status", "ledger_markdown"]

# status -> the sphinx-design badge role that shows it
STATUSES = {
    "reproduced": "bdg-success", "partly": "bdg-warning", "not reproduced": "bdg-danger",
    "cannot test here": "bdg-secondary", "pending": "bdg-light", "pending GPU": "bdg-info",
    "not attempted": "bdg-dark",
}


def claim_status(entries: list[dict]) -> tuple[str, str | None]:
    """(verdict, rule) of one claim from the entries its chapters recorded: the first entry judged by a rule (a
    chapter may add evidence to a claim another chapter judges); pending when none was."""
    for entry in entries:
        if entry.get("verdict") is not None:
            return entry["verdict"], entry["rule"]
    return "pending", None


def _badge(status: str) -> str:
    return f"{{{STATUSES[status]}}}`{status}`"


def ledger_markdown(claims_path: Path, root: Path, chapters: set[str]) -> str:
    """The ledger: a narrow table (claim, a badge per book profile, the chapters that measured it) for the
    one-look answer, then one paragraph per claim with the paper's statement and source, our summary and the
    rule behind the badge."""
    claims = yaml.safe_load(Path(claims_path).read_text())
    profiles = book_profiles(root)
    header = ["Claim", *(f"{profile}" for profile in profiles), "Chapters"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    details = []
    measured = {profile: profile_results(root, profile) for profile in profiles}
    for number, claim in enumerate(claims, start=1):
        statuses, ours, notebooks, rule = [], "not run yet", [], None
        for profile in profiles:
            found = [(notebook, data["claims"][claim["id"]]) for notebook, data in measured[profile]
                     if claim["id"] in data.get("claims", {}) and data.get("provenance", {}).get("status") == "complete"]
            if "not_attempted" in claim and not found:
                statuses.append(_badge("not attempted"))
                ours, rule = "not attempted", f"none: {claim['not_attempted']}"
            elif found:
                status, judged_by = claim_status([entry for _, entry in found])
                statuses.append(_badge(status))
                rule = rule or judged_by
            else:
                statuses.append(_badge("pending GPU" if profile in GPU_PROFILES else "pending"))
            notebooks += [notebook for notebook, _ in found if notebook not in notebooks]
            if profile == "tiny" and found:
                ours = "; ".join(f"{entry['summary']} (chapter {notebook[:2]})" for notebook, entry in found)
        links = ", ".join(chapter_link(notebook, chapters) for notebook in notebooks) or "–"
        lines.append("| " + " | ".join([f"{number}. {cell(claim['claim'])}", *statuses, links]) + " |")
        rule = rule or "stated by the chapter that judges this claim, once it has run"
        details.append(f"**{number}. {claim['claim']}** The paper: {claim['paper']} ({claim['source']}). "
                       f"Ours, on the CPU profile: {ours}. Rule: {rule}.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(details) + "\n"
