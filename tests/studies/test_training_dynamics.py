import dataclasses

import pandas as pd
import pytest

from spartan_core.studies import fixed_penalties
from spartan_core.studies import training_dynamics as study
from spartan_core.training.evaluate import HeldOut
from spartan_core.studies.seeds import Seeds
from spartan_core.studies.fixed_penalties import Tradeoff, compare_fixed_penalties, penalties_over_seeds
from spartan_core.studies.training_dynamics import PenaltyOutcome, geco_over_seeds, geco_run


def test_geco_run_reads_the_logged_run(tiny_zoo):
    run = geco_run("shakespeare-lm", {"eta": 5.0, "tau_factor": 2.0}, dense_steps=30, seed=3)
    assert tiny_zoo[0][2] == {"seed": 3, "steps": 30}, "a toy gets its training seed and pretraining steps"
    assert tiny_zoo[0][1]["seed"] == 3, "the post-training uses the same training seed"
    assert run.seed == 3
    row = run.row()
    assert row["steps"] == run.steps == len(run.history) == 6 and row["evals"] == 2
    assert 0 < row["kept_fraction"] <= 1 and row["beta_max"] >= row["beta_first"] > 0
    assert "dense_exact_match" not in row and run.heldout_split == "validation"
    runs = Seeds((run,))
    assert study.training_dynamics_claim(runs).sentence.startswith(
        "shakespeare-lm, 6 steps, 1 seed: expected edge fraction")
    kept = study.edges_kept_claim(runs).sentence
    assert "of attention edges kept" in kept and "exact match" not in kept
    assert list(study.summary_table(runs).columns) == ["dense checkpoint", "sparse (GECO)"]


def test_hub_models_get_no_pretraining_overrides(tiny_zoo):
    geco_run("gpt2", {}, dense_steps=30)
    assert tiny_zoo[0][2] == {}


def test_fixed_penalties_hold_beta_and_are_compared_with_geco(tiny_zoo):
    geco = geco_run("addition-4l", {}, seed=1)
    tradeoff = compare_fixed_penalties("addition-4l", {"lr": 1e-3}, [0.5, 2.0], geco)
    assert [call[1] for call in tiny_zoo[1:]] == [{"lr": 1e-3, "seed": 1, "eta": 0.0, "beta_init": b}
                                                  for b in (0.5, 2.0)]
    assert all(call[2] == {"seed": 1} for call in tiny_zoo), "every run of a seed shares that seed's dense toy"
    assert tradeoff.seed == 1
    frame = tradeoff.frame()
    assert frame["method"].tolist() == ["geco", "fixed", "fixed"] and frame["ce_ratio_to_geco"].iloc[0] == 1.0
    assert frame["run"].tolist() == ["GECO", "fixed β = 0.5", "fixed β = 2"]
    assert fixed_penalties.tradeoff_sentence(Seeds((tradeoff,))).count("β = ") == 2
    with pytest.raises(ValueError, match="^betas:"):
        compare_fixed_penalties("addition-4l", {}, [], geco)


@pytest.mark.parametrize("fixed, phrase", [
    (PenaltyOutcome(3.0, 0.0094, 0.05, 0.0066), "kept fewer edges than GECO (0.94% (1 seed) kept) and a higher "
                                                "held-out CE than GECO's (44× (1 seed) GECO's)"),
    (PenaltyOutcome(3.0, 0.0094, 0.05, 0.0001), "it beats GECO on both"),
    (PenaltyOutcome(0.3, 0.0246, 0.15, 0.0001), "kept no fewer edges than GECO (2.46% (1 seed) kept) and a held-out "
                                                "CE no higher than GECO's"),
    (PenaltyOutcome(0.3, 0.0246, 0.15, 0.0066), "it does not beat GECO on both counts"),
])
def test_the_sentence_says_for_each_fixed_beta_whether_it_beat_geco(fixed, phrase):
    tradeoff = Tradeoff(geco=PenaltyOutcome(None, 0.0139, 0.08, 0.00015), fixed=(fixed,))
    sentence = fixed_penalties.tradeoff_sentence(Seeds((tradeoff,)))
    assert phrase in sentence
    assert sentence.startswith("GECO kept 1.39% (1 seed) of the edges")
    assert tradeoff.beats_geco() == ([3.0] if "beats GECO" in phrase else [])


def test_collapses_count_returns_to_the_lower_clamp():
    history = pd.DataFrame({"phase": "geco", "log_beta": [-10, -5, -10, -10, -3, -10], "beta": 1.0,
                            "beta_used": 1.0, "expected_fraction": 0.5})
    run = study.GecoRun(model="m", history=history, evals=pd.DataFrame({"eval_ce": [0.1, 0.3]}),
                        tau=0.2, tau_reference="dense", beta_min=2.718281828459045 ** -10,
                        dense_train_ce=0.1, dense_heldout_ce=0.1, heldout_split="test", best_step=None,
                        train_wall_time_s=1.0, outcome=PenaltyOutcome(None, 0.1, 1.0, 0.1))
    assert run.beta_collapses == 2 and run.evals_meeting_tau == 1


def test_displayed_table_labels_each_run():
    tradeoff = Tradeoff(geco=PenaltyOutcome(None, 0.02, 0.1, 0.01), fixed=(PenaltyOutcome(3.0, 0.01, 0.05, 0.02),))
    table = fixed_penalties.tradeoff_table(Seeds((tradeoff,)))
    assert table.index.tolist() == ["GECO", "fixed β = 3"] and table["CE ÷ GECO's"].tolist() == ["1.00×", "2.00×"]


def test_cache_keys_match_the_pretrained_models(tiny_zoo):
    """The tiny profile's models are trained ahead with exactly these calls: the study must ask for the same ones."""
    penalties_over_seeds("addition-4l", {}, [3.0], geco_over_seeds("addition-4l", {}, [0, 2]))
    assert tiny_zoo == [("addition-4l", {"seed": 0}, {"seed": 0}), ("addition-4l", {"seed": 0, "policy": "dense"},
                                                                   {"seed": 0}),
                        ("addition-4l", {"seed": 2}, {"seed": 2}), ("addition-4l", {"seed": 2, "policy": "dense"},
                                                                   {"seed": 2}),
                        ("addition-4l", {"seed": 0, "eta": 0.0, "beta_init": 3.0}, {"seed": 0}),
                        ("addition-4l", {"seed": 2, "eta": 0.0, "beta_init": 3.0}, {"seed": 2})]


def _run(seed, kept, ce, collapses=0, beta_max=10.0, dense_ce=0.06, best_step=4):
    """A made-up 4-step run; ``collapses="unrecovered"``: β falls back onto its clamp at step 3 and stays."""
    log_beta = [-10.0, -2.0] + {0: [-1.0, -1.0], 1: [-10.0, -1.0], "unrecovered": [-10.0, -10.0]}[collapses]
    history = pd.DataFrame({"step": [1, 2, 3, 4], "phase": "geco", "log_beta": log_beta,
                            "beta": [1e-4, 1.0, beta_max, 1.0], "beta_used": [1e-4, 1.0, 1.0, 1.0],
                            "expected_fraction": [0.5, 0.3, 0.1, kept], "ce": 0.1, "ce_ema": 0.1, "tau": 0.2})
    evals = pd.DataFrame({"step": [2, 4], "eval_ce": [0.1, 0.3], "eval_kept_fraction": [0.3, kept]})
    control = HeldOut(ce=0.003, exact_match={"all": 0.99})
    return study.GecoRun(model="m", history=history, evals=evals, tau=0.2, tau_reference="dense", control=control,
                         beta_min=2.718281828459045 ** -10, dense_train_ce=0.05, dense_heldout_ce=dense_ce,
                         heldout_split="test", best_step=best_step, train_wall_time_s=1.0,
                         outcome=PenaltyOutcome(None, kept, 10 * kept, ce), seed=seed,
                         dense_exact_match=0.99, sparse_exact_match=1.0)


def test_seed_runs_report_every_seed_and_the_spread():
    runs = Seeds((_run(0, 0.02, 0.004, collapses=1), _run(1, 0.01, 0.002), _run(2, 0.03, 0.003, beta_max=40.0)))
    frame = runs.per_seed()
    assert frame["seed"].tolist() == [0, 1, 2] and frame["kept_fraction"].tolist() == [0.02, 0.01, 0.03]
    s = runs.spreads(study.HEADLINE)
    assert s["kept_fraction"].n == 3 and (s["kept_fraction"].low, s["kept_fraction"].high) == (0.01, 0.03)
    assert abs(s["kept_fraction"].mean - 0.02) < 1e-12 and s["beta_max"].high == 40.0
    assert s["beta_collapses"].values == (1.0, 0.0, 0.0)
    record = study.spread_record(runs)
    # (a mean of equal values may sit one rounding step above them)
    assert all(r["min"] - 1e-12 <= r["mean"] <= r["max"] + 1e-12 and r["n"] == 3 for r in record.values())
    assert record["sparse_heldout_ce"]["values"] == [0.004, 0.002, 0.003]
    history = runs.stacked(lambda run: run.history)
    assert history["seed"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 and "seed" in runs.stacked(lambda r: r.evals)
    kept = study.edges_kept_claim(runs).sentence
    assert "2.00% (1.00%–3.00% over 3 seeds) of attention edges kept" in kept
    assert "exact match 100.0% (all 3 seeds)" in kept
    assert study.training_dynamics_claim(runs).sentence.startswith(
        "m, 4 steps, 3 seeds: expected edge fraction 0.5000 (all 3 seeds)")
    assert "lower clamp 0.333 (0–1 over 3 seeds) times per run (in 1 of 3 seeds at least once)" in \
        study.geco_sentence(runs)
    assert study.summary_table(runs).loc["kept edges", "sparse (GECO)"] == "2.00% (1.00%–3.00%)"
    assert study.per_seed_table(runs)["kept edges (%)"].tolist() == [2.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="^seeds:"):
        geco_over_seeds("addition-4l", {}, [0, 0])


def test_one_seed_reads_like_one_run():
    runs = Seeds((_run(0, 0.02, 0.004, collapses=1),))
    assert "2.00% (1 seed)" in study.edges_kept_claim(runs).sentence
    assert "once fell back onto its lower clamp" in study.geco_sentence(runs)
    assert "The kept checkpoint is step 4." in study.geco_sentence(runs)


@pytest.mark.parametrize("kept, best_step, collapses, verdict", [
    (0.04, 4, 1, "reproduced"), (0.06, 4, 0, "not reproduced"), (0.02, None, 0, "partly"),
    (0.02, 4, "unrecovered", "partly"), (0.5, 4, 0, "not reproduced"),
])
def test_the_training_dynamics_rule_judges_the_shape(kept, best_step, collapses, verdict):
    runs = Seeds((_run(0, kept, 0.004, collapses=collapses, best_step=best_step), _run(1, 0.01, 0.004)))
    claim = study.training_dynamics_claim(runs)
    assert claim.id == "training_dynamics" and claim.verdict == verdict and "falls ≥ 10×" in claim.rule
    assert claim.values["seeds"] == [0, 1] and claim.values["sparsity_fall"]["values"] == [0.5 / kept, 50.0]
    assert claim.values["seeds_not_recovered"] == ([0] if collapses == "unrecovered" else [])
    assert claim.values["seeds_never_meeting_tau"] == ([0] if best_step is None else [])


def test_beta_must_rise_for_the_shape():
    run = _run(0, 0.02, 0.004)
    flat = dataclasses.replace(run, history=run.history.assign(beta=[1e-4, 2e-4, 5e-4, 5e-4], beta_used=1e-4))
    assert flat.beta_rise == pytest.approx(5.0)
    assert study.training_dynamics_claim(Seeds((flat,))).verdict == "partly"


def test_chapter_2_records_edges_kept_against_the_control_for_chapter_3_to_judge():
    runs = Seeds((_run(0, 0.01, 0.004), _run(1, 0.02, 0.002)))
    claim = study.edges_kept_claim(runs)
    assert claim.id == "edges_kept" and claim.verdict is None and claim.rule is None
    assert "vs 0.0030 (both seeds) for its compute-matched control" in claim.sentence
    assert "exact match 100.0% (both seeds) vs 99.0% (both seeds)" in claim.sentence
    assert claim.values["control_heldout_ce"]["mean"] == pytest.approx(0.003)
    table = study.summary_table(runs)
    assert list(table.columns) == ["dense checkpoint", "control (same steps, no gate)", "sparse (GECO)"]


def test_seed_tradeoffs_count_the_seeds_a_fixed_beta_beats_geco():
    geco = [PenaltyOutcome(None, 0.02, 0.1, 0.010), PenaltyOutcome(None, 0.02, 0.1, 0.010),
            PenaltyOutcome(None, 0.01, 0.1, 0.010)]
    fixed = [PenaltyOutcome(3.0, 0.015, 0.1, 0.005), PenaltyOutcome(3.0, 0.015, 0.1, 0.020),
             PenaltyOutcome(3.0, 0.015, 0.1, 0.005)]
    seeds = Seeds(tuple(Tradeoff(g, (f,), seed=s) for s, (g, f) in enumerate(zip(geco, fixed))))
    frame = seeds.stacked(Tradeoff.frame)
    assert frame["seed"].tolist() == [0, 0, 1, 1, 2, 2] and frame["run"].tolist() == ["GECO", "fixed β = 3"] * 3
    assert frame["beats_geco"].tolist() == [False, True, False, False, False, False]
    wins = fixed_penalties.wins(seeds).iloc[0]
    assert (wins["sparser"], wins["ce_no_higher"], wins["beats_geco"], wins["seeds"]) == (2, 2, 1, 3)
    assert wins["beating_seeds"] == [0]
    sentence = fixed_penalties.tradeoff_sentence(seeds)
    assert "it beats GECO on both counts in 1 of 3 seeds" in sentence
    assert "kept fewer edges than GECO in 2 of 3 seeds" in sentence
    assert sentence.startswith("GECO kept 1.67% (1.00%–2.00% over 3 seeds) of the edges")
    spreads = fixed_penalties.tradeoff_spreads(seeds)["fixed β = 3"]
    assert spreads["ce_ratio_to_geco"].values == (0.5, 2.0, 0.5) and spreads["heldout_ce"].n == 3
    assert fixed_penalties.tradeoff_spread_record(seeds)["GECO"]["kept_fraction"]["values"] == [0.02, 0.02, 0.01]
    assert fixed_penalties.tradeoff_table(seeds).loc["fixed β = 3", "beats GECO on both (seeds)"] == "1 of 3"
    with pytest.raises(ValueError, match="^tradeoffs:"):
        fixed_penalties.wins(Seeds((Tradeoff(geco[0], (fixed[0],), seed=0), Tradeoff(geco[1], (), seed=1))))


def test_over_seeds_runs_every_seed(tiny_zoo):
    runs = geco_over_seeds("addition-4l", {}, [0, 1])
    tradeoffs = penalties_over_seeds("addition-4l", {}, [1.0], runs)
    assert runs.seeds == tradeoffs.seeds == [0, 1] and runs.spreads(study.HEADLINE)["kept_fraction"].n == 2
    assert study.per_seed_table(runs).index.tolist() == [0, 1]
    assert tradeoffs.stacked(Tradeoff.frame)["seed"].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="^seeds:"):
        geco_over_seeds("addition-4l", {}, [])
