"""The claims ledger: one row per claim of ``book/claims.yaml`` with a status computed from the results files.

Each claim has one stated rule (:data:`RULES`) that reads the values its chapter recorded with
``ResultsDir.claim`` and returns a status: reproduced, partly, not reproduced, or cannot test here (the claim was
recorded, but this scale has no model that can show it). A claim that no finished results folder recorded is
pending: not run yet on the CPU profile, or waiting for a GPU on the paper profile. The rule is printed next to
its badge, so a reader can disagree with the threshold rather than with a hidden judgement.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from .params import GPU_PROFILES
from .tables import book_profiles
from .tables import cell as _cell
from .tables import chapter_link as _chapter_link
from .tables import profile_results as _profile_results

__all__ = ["RULES", "STATUSES", "claim_status", "ledger_markdown"]

# status -> the sphinx-design badge role that shows it
STATUSES = {
    "reproduced": "bdg-success", "partly": "bdg-warning", "not reproduced": "bdg-danger",
    "cannot test here": "bdg-secondary", "pending": "bdg-light", "pending GPU": "bdg-info",
}


def _mean(entry: dict, key: str) -> float | None:
    value = entry.get(key)
    return value.get("mean") if isinstance(value, dict) else value


def _mechanism(entry):
    exact = entry.get("open_gates_max_abs_logit_diff", 1.0) <= 1e-4
    sampled = entry.get("sampling_max_abs_error", 1.0) <= 0.02
    return "reproduced" if exact and sampled else "not reproduced"


def _training_dynamics(entry):
    last, beta = _mean(entry, "expected_fraction_last"), entry.get("beta_max", {}).get("max", 0.0)
    if last is None:
        return None
    if last <= 0.02 and beta >= 1000:
        return "reproduced"
    return "partly" if last <= 0.05 else "not reproduced"


def _edges_kept(entry):
    kept, ce, dense = (_mean(entry, k) for k in ("kept_fraction", "heldout_ce", "dense_heldout_ce"))
    if None in (kept, ce, dense):
        return None
    if kept <= 0.005 and ce <= dense * 1.01 + 1e-3:
        return "reproduced"
    return "partly" if kept <= 0.05 and ce <= dense * 1.05 + 0.01 else "not reproduced"


def _addition_circuit(entry):
    seeds, selective = entry.get("seeds", []), entry.get("selective_seeds", [])
    if not seeds:
        return None
    if _mean(entry, "sparse_exact_match") < 0.99 or not selective:
        return "not reproduced"
    return "reproduced" if len(selective) == len(seeds) else "partly"


def _induction_heads(entry):
    if not entry.get("available", True) or not entry.get("testable_seeds", [1]):
        return "cannot test here"
    dense, sparse = _mean(entry, "dense_heads"), _mean(entry, "sparse_heads")
    if dense is None or sparse is None:
        return None
    if dense == 0:
        return "cannot test here"
    return "reproduced" if sparse <= dense / 2 else "partly" if sparse <= 0.75 * dense else "not reproduced"


def _circuit_ratio(threshold: float, some: float) -> Callable[[dict], str | None]:
    def rule(entry):
        ratios = [task["over_draws"]["mean"] for task in entry.get("tasks", {}).values() if task.get("counts")]
        if not ratios:
            return "cannot test here"
        if all(r >= threshold for r in ratios):
            return "reproduced"
        return "partly" if any(r >= some for r in ratios) else "not reproduced"
    return rule


def _baselines(entry):
    beaten = entry.get("beaten")
    if not beaten:
        return None
    counts = [len(policies) for policies in beaten.values()]
    return "reproduced" if all(c == 5 for c in counts) else "partly" if any(counts) else "not reproduced"


def _controllers(entry):
    best = entry.get("best")
    if best is None:
        return None
    return "reproduced" if best.lower().startswith("geco") else "partly"


# claim id -> (the rule in words, the rule)
RULES: dict[str, tuple[str, Callable[[dict], str | None]]] = {
    "mechanism": ("reproduced when open gates give the dense logits to 1e-4 and sampled keep frequencies are within "
                  "0.02 of σ(s + b)", _mechanism),
    "training_dynamics": ("reproduced when the expected fraction ends ≤ 0.02 and β reaches ≥ 1000; partly when the "
                          "fraction ends ≤ 0.05", _training_dynamics),
    "edges_kept": ("reproduced at ≤ 0.5 % of edges with held-out CE ≤ dense + 1 %; partly at ≤ 5 % with CE ≤ "
                   "dense + 5 % (+0.01 nats)", _edges_kept),
    "addition_circuit": ("reproduced when the sparse toy solves ≥ 99 % and keeps a carry-selective edge in every "
                         "seed; partly in some seeds", _addition_circuit),
    "induction_heads": ("reproduced when the sparse copies have at most half the dense model's induction heads; "
                        "partly at most three quarters", _induction_heads),
    "circuit_heads": ("reproduced when every task that counts needs ≥ 1.4× fewer heads (the paper's lowest); partly "
                      "when one needs ≥ 1.4×", _circuit_ratio(1.4, 1.4)),
    "circuit_edges": ("reproduced when every task that counts needs ≥ 5.4× fewer edges (the paper's lowest); partly "
                      "when one needs ≥ 2×", _circuit_ratio(5.4, 2.0)),
    "baselines": ("reproduced when the gate beats all five fixed policies on every model; partly on some",
                  _baselines),
    "controllers": ("reproduced when GECO reaches the best end point meeting τ; partly when another controller "
                    "does", _controllers),
}


def claim_status(claim_id: str, entries: list[dict]) -> str:
    """The status of one claim from the entries its chapters recorded (the first one the rule can read)."""
    _, rule = RULES.get(claim_id, ("", lambda entry: None))
    for entry in entries:
        status = rule(entry)
        if status is not None:
            return status
    return "pending"


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
    measured = {profile: _profile_results(root, profile) for profile in profiles}
    for number, claim in enumerate(claims, start=1):
        statuses, ours, notebooks = [], "not run yet", []
        for profile in profiles:
            found = [(notebook, data["claims"][claim["id"]]) for notebook, data in measured[profile]
                     if claim["id"] in data.get("claims", {}) and data.get("provenance", {}).get("status") == "complete"]
            if found:
                statuses.append(_badge(claim_status(claim["id"], [entry for _, entry in found])))
            else:
                statuses.append(_badge("pending GPU" if profile in GPU_PROFILES else "pending"))
            notebooks += [notebook for notebook, _ in found if notebook not in notebooks]
            if profile == "tiny" and found:
                ours = "; ".join(f"{entry['summary']} (chapter {notebook[:2]})" for notebook, entry in found)
        links = ", ".join(_chapter_link(notebook, chapters) for notebook in notebooks) or "–"
        lines.append("| " + " | ".join([f"{number}. {_cell(claim['claim'])}", *statuses, links]) + " |")
        rule = RULES.get(claim["id"], ("no rule yet: the badge stays pending",))[0]
        details.append(f"**{number}. {claim['claim']}** The paper: {claim['paper']} ({claim['source']}). "
                       f"Ours, on the CPU profile: {ours}. Rule: {rule}.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(details) + "\n"
