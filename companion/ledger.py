"""The claims ledger: one row per claim of ``book/claims.yaml`` with the verdict its chapter recorded.

The study that measures a claim judges it (:class:`spartan_core.claims.Claim`: reproduced, partly, not
reproduced, or cannot test here) and states its rule; the ledger only collects those records from the finished
results folders. A claim that no finished results folder judged is pending: not run yet on the CPU profile, or
waiting for a GPU on the paper profile; a claim that ``claims.yaml`` marks ``not_attempted`` says so, with why. The rule is printed next to its badge, so a reader can disagree with the
threshold rather than with a hidden judgement.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from .params import GPU_PROFILES
from .tables import book_profiles, chapter_link, forced_device, markdown_table, profile_results

__all__ = ["STATUSES", "LedgerRow", "claim_status", "ledger_rows", "ledger_verdicts_markdown", "ledger_table_markdown",
           "ledger_details_markdown"]

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


@dataclass(frozen=True)
class LedgerRow:
    """One claim as the ledger shows it: its statement from ``claims.yaml``, its status per book profile, the
    CPU profile's headline numbers and sentences, the chapters that measured it and the rule behind the badge."""

    number: int
    claim: dict
    statuses: dict[str, str]
    headline: str
    ours: str
    notebooks: list[str]
    rule: str
    forced: dict[str, str]  # profile -> where a GPU profile's verdict ran when that was not a GPU ("" otherwise)
    elsewhere: dict[str, str]  # profile -> its sentences, for the profiles other than the CPU one that judged


def ledger_rows(claims_path: Path, root: Path) -> list[LedgerRow]:
    """Every claim of ``claims_path`` with what the finished results folders under ``root`` recorded for it."""
    claims = yaml.safe_load(Path(claims_path).read_text())
    profiles = book_profiles(root)
    measured = {profile: profile_results(root, profile) for profile in profiles}
    rows = []
    for number, claim in enumerate(claims, start=1):
        statuses, ours, headline, notebooks, rule = {}, "not run yet", "not run yet", [], None
        forced, elsewhere = {}, {}
        for profile in profiles:
            found = [(notebook, data) for notebook, data in measured[profile]
                     if claim["id"] in data.get("claims", {}) and data.get("provenance", {}).get("status") == "complete"]
            entries = [data["claims"][claim["id"]] for _, data in found]
            if "not_attempted" in claim and not found:
                statuses[profile] = "not attempted"
                ours = headline = "not attempted"
                rule = f"none: {claim['not_attempted']}"
            elif found:
                statuses[profile], judged_by = claim_status(entries)
                rule = rule or judged_by
                forced[profile] = "".join(sorted({forced_device(profile, data) for _, data in found}))
                sentences = "; ".join(f"{entry['summary']} (chapter {notebook[:2]})"
                                      for (notebook, _), entry in zip(found, entries))
                if profile == "tiny":
                    ours = sentences
                    headline = next((entry["headline"] for entry in entries if entry.get("headline")),
                                    "see the chapter")
                else:
                    elsewhere[profile] = sentences
            else:
                statuses[profile] = "pending GPU" if profile in GPU_PROFILES else "pending"
            notebooks += [notebook for notebook, _ in found if notebook not in notebooks]
        rows.append(LedgerRow(number, claim, statuses, headline, ours, notebooks,
                              rule or "stated by the chapter that judges this claim, once it has run", forced,
                              elsewhere))
    return rows


def _judged_profiles(rows: list[LedgerRow]) -> list[str]:
    """The CPU profile, and each other profile once it has judged something."""
    return [p for p in (rows[0].statuses if rows else {})
            if p == "tiny" or any(r.statuses[p] not in ("pending", "pending GPU", "not attempted") for r in rows)]


def ledger_verdicts_markdown(rows: list[LedgerRow]) -> str:
    """The front page's answer in one sentence: how many claims each verdict got on the CPU profile, and which
    profiles have not judged anything yet."""
    profiles = _judged_profiles(rows)
    counts = Counter(r.statuses["tiny"] for r in rows if "tiny" in r.statuses)
    order = [*STATUSES]
    lead = ("Verdicts on the CPU profile (`tiny`): "
            + ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=order.index)) + ".")
    waiting = [p for p in (rows[0].statuses if rows else {}) if p not in profiles]
    if waiting:
        lead += (" The " + " and ".join(f"`{p}`" for p in waiting) + " profile has not run on a GPU yet, so each of "
                 "its verdicts is pending.")
    return lead + "\n"


def ledger_table_markdown(rows: list[LedgerRow], chapters: set[str]) -> str:
    """One narrow row per claim: its short name, the paper's number, ours with its spread over training seeds, a
    badge per profile that has judged something (:func:`ledger_verdicts_markdown` names the others), the chapters."""
    profiles = _judged_profiles(rows)
    header = ["Claim", "The paper", "Ours (CPU profile; mean, min–max over training seeds)",
              *(f"Verdict: {p}" for p in profiles), "Chapters"]
    table = [[f"{r.number}. {r.claim['short']}", r.claim["paper_number"], r.headline,
              *(_badge(r.statuses[p]) + r.forced.get(p, "") for p in profiles),
              ", ".join(chapter_link(notebook, chapters) for notebook in r.notebooks) or "–"] for r in rows]
    return markdown_table(header, table) + "\n"


def ledger_details_markdown(rows: list[LedgerRow]) -> str:
    """One paragraph per claim: the paper's statement and source, our sentences and the rule behind the badge."""
    return "\n\n".join(
        f"**{r.number}. {r.claim['claim']}** The paper: {r.claim['paper']} ({r.claim['source']}). "
        f"Ours, on the CPU profile: {r.ours}."
        + "".join(f" On the `{p}` profile{r.forced.get(p, '')}: {text}." for p, text in r.elsewhere.items())
        + f" Rule: {r.rule}." for r in rows) + "\n"
