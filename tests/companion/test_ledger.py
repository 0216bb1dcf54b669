"""The claims ledger shows the verdicts and rules the chapters recorded: the first chapter that judged a claim
gives its badge, a chapter that only adds evidence gives none, an unfinished run shows nothing, and the paper
profile is pending until it has run."""

import pytest

from companion.ledger import claim_status, ledger_markdown
from companion.results import REPO_ROOT, ResultsDir
from spartan_core.claims import Claim


def test_the_first_judged_entry_gives_the_status_and_its_rule():
    evidence = {"summary": "more numbers"}
    judged = Claim("edges_kept", "kept 0.3 %", {"kept_fraction": 0.003}, "not reproduced", "a rule").to_record()
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
                     "reproduced", "reproduced when open gates give the dense logits"))
    done.finish()
    unfinished = ResultsDir("tiny", "05_fake", {}, root=tmp_path)
    unfinished.claim(Claim("addition_circuit", "still running", {"seeds": [0]}, "reproduced", "a rule"))
    ledger = ledger_markdown(REPO_ROOT / "book" / "claims.yaml", tmp_path, chapters={"01_fake"})
    rows = [line.split(" | ") for line in ledger.split("\n\n")[0].splitlines()[2:]]
    mechanism = next(r for r in rows if r[0].startswith("| 1. Gated attention"))
    assert mechanism[1:] == ["{bdg-success}`reproduced`", "{bdg-info}`pending GPU`", "{doc}`01 </chapters/01_fake>` |"]
    addition = next(r for r in rows if "Toy addition" in r[0])
    assert addition[1:] == ["{bdg-light}`pending`", "{bdg-info}`pending GPU`", "– |"]
    assert ("Ours, on the CPU profile: open gates exact (chapter 01). Rule: reproduced when open gates give the "
            "dense logits.") in ledger
    assert "Ours, on the CPU profile: not run yet. Rule: stated by the chapter" in ledger


def test_a_claim_marked_not_attempted_says_so_with_its_reason(tmp_path):
    ledger = ledger_markdown(REPO_ROOT / "book" / "claims.yaml", tmp_path, chapters=set())
    row = next(line for line in ledger.splitlines() if "attention attribution is carried by few heads" in line)
    assert row.count("{bdg-dark}`not attempted`") == 2, "no profile pretends it is pending"
    assert "Ours, on the CPU profile: not attempted. Rule: none: the paper measures it through cross-layer" in ledger
