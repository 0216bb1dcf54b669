"""The claims ledger shows the verdicts and rules the chapters recorded: the first chapter that judged a claim
gives its badge, a chapter that only adds evidence gives none, an unfinished run shows nothing, and the paper
profile is pending until it has run."""

import pytest

from companion.ledger import claim_status, ledger_details_markdown, ledger_rows, ledger_table_markdown
from companion.results import REPO_ROOT, ResultsDir
from spartan_core.claims import Claim


def test_the_first_judged_entry_gives_the_status_and_its_rule():
    evidence = {"summary": "more numbers"}
    judged = Claim("edges_kept", "kept 0.3 %", {"kept_fraction": 0.003}, "not reproduced", "a rule", "0.3 %").to_record()
    assert claim_status([evidence, judged]) == ("not reproduced", "a rule")
    assert claim_status([evidence]) == ("pending", None)
    assert claim_status([]) == ("pending", None)


def test_a_claim_refuses_an_unknown_verdict_a_verdict_without_rule_and_reserved_values():
    with pytest.raises(ValueError, match="^verdict: must be one of"):
        Claim("mechanism", "s", verdict="probably", rule="r")
    with pytest.raises(ValueError, match="^rule: a verdict needs the rule"):
        Claim("mechanism", "s", verdict="reproduced")
    with pytest.raises(ValueError, match="^values: 'summary' is a field"):
        Claim("mechanism", "s", {"summary": "x"})


def test_the_ledger_reads_finished_results_only_and_the_paper_column_waits_for_a_gpu(tmp_path):
    done = ResultsDir("tiny", "01_fake", {}, root=tmp_path)
    done.claim(Claim("mechanism", "open gates exact", {"open_gates_max_abs_logit_diff": 0.0},
                     "reproduced", "reproduced when open gates give the dense logits", "logits within 0"))
    done.finish()
    unfinished = ResultsDir("tiny", "05_fake", {}, root=tmp_path)
    unfinished.claim(Claim("addition_circuit", "still running", {"seeds": [0]}, "reproduced", "a rule", "x"))
    rows = {r.claim["id"]: r for r in ledger_rows(REPO_ROOT / "book" / "claims.yaml", tmp_path)}
    assert rows["mechanism"].statuses == {"tiny": "reproduced", "paper": "pending GPU"}
    assert rows["mechanism"].notebooks == ["01_fake"] and rows["mechanism"].headline == "logits within 0"
    assert rows["addition_circuit"].statuses == {"tiny": "pending", "paper": "pending GPU"}
    table = ledger_table_markdown(list(rows.values()), chapters={"01_fake"})
    assert "| 1. The gate: softmax times a binary mask | exact by construction | logits within 0 | " \
           "{bdg-success}`reproduced` | {doc}`01 </chapters/01_fake>` |" in table
    details = ledger_details_markdown(list(rows.values()))
    assert ("Ours, on the CPU profile: open gates exact (chapter 01). Rule: reproduced when open gates give the "
            "dense logits.") in details
    assert "Ours, on the CPU profile: not run yet. Rule: stated by the chapter" in details


def test_a_claim_marked_not_attempted_says_so_with_its_reason(tmp_path):
    rows = ledger_rows(REPO_ROOT / "book" / "claims.yaml", tmp_path)
    attribution = next(r for r in rows if r.claim["id"] == "attention_attribution")
    assert set(attribution.statuses.values()) == {"not attempted"}, "no profile pretends it is pending"
    assert "Ours, on the CPU profile: not attempted. Rule: none: the paper measures it through cross-layer" in \
        ledger_details_markdown(rows)


def test_a_judged_claim_needs_its_headline():
    with pytest.raises(ValueError, match="^headline: a judged claim needs"):
        Claim("mechanism", "s", {}, "reproduced", "a rule")
