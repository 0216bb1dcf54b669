"""The claims ledger's badges come from the results by stated rules: each status is reachable, an unfinished
run shows nothing, and the paper profile is pending until it has run."""

from companion.ledger import claim_status, ledger_markdown
from companion.results import REPO_ROOT, ResultsDir


def spread(mean):
    return {"mean": mean, "min": mean, "max": mean, "n": 1, "values": [mean]}


def test_each_status_follows_its_rule():
    assert claim_status("edges_kept", [{"kept_fraction": spread(0.003), "heldout_ce": spread(2.00),
                                        "dense_heldout_ce": spread(1.99)}]) == "reproduced"
    assert claim_status("edges_kept", [{"kept_fraction": spread(0.014), "heldout_ce": spread(0.005),
                                        "dense_heldout_ce": spread(0.0046)}]) == "partly"
    assert claim_status("edges_kept", [{"kept_fraction": spread(0.3), "heldout_ce": spread(2.0),
                                        "dense_heldout_ce": spread(2.0)}]) == "not reproduced"
    assert claim_status("induction_heads", [{"available": False}]) == "cannot test here"
    assert claim_status("induction_heads", [{"dense_heads": spread(4.0), "sparse_heads": spread(3.33)}]) \
        == "not reproduced"
    counting = {"tasks": {"a": {"counts": True, "over_draws": spread(6.0)},
                          "b": {"counts": False, "over_draws": spread(0.5)}}}
    assert claim_status("circuit_edges", [counting]) == "reproduced"
    assert claim_status("circuit_edges", [{"tasks": {"a": {"counts": True, "over_draws": spread(3.9)}}}]) == "partly"
    assert claim_status("edges_kept", [{"summary": "no values"}]) == "pending"


def test_the_ledger_reads_finished_results_only_and_the_paper_column_waits_for_a_gpu(tmp_path):
    done = ResultsDir("tiny", "01_fake", {}, root=tmp_path)
    done.claim("mechanism", "open gates exact", open_gates_max_abs_logit_diff=0.0, sampling_max_abs_error=0.01)
    done.finish()
    unfinished = ResultsDir("tiny", "05_fake", {}, root=tmp_path)
    unfinished.claim("addition_circuit", "still running", seeds=[0], selective_seeds=[0],
                     sparse_exact_match=spread(1.0))
    ledger = ledger_markdown(REPO_ROOT / "book" / "claims.yaml", tmp_path, chapters={"01_fake"})
    rows = [line.split(" | ") for line in ledger.split("\n\n")[0].splitlines()[2:]]
    mechanism = next(r for r in rows if r[0].startswith("| 1. Gated attention"))
    assert mechanism[1:] == ["{bdg-success}`reproduced`", "{bdg-info}`pending GPU`", "{doc}`01 </chapters/01_fake>` |"]
    addition = next(r for r in rows if "Toy addition" in r[0])
    assert addition[1:] == ["{bdg-light}`pending`", "{bdg-info}`pending GPU`", "– |"]
    assert "Ours, on the CPU profile: open gates exact (chapter 01). Rule: reproduced when open gates" in ledger
    assert "Ours, on the CPU profile: not run yet. Rule:" in ledger
