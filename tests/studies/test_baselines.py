import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from spartan_core import plots  # noqa: E402
from spartan_core.studies import baselines, controller_comparison  # noqa: E402
from spartan_core.studies.baselines import Pareto, ParetoPoint  # noqa: E402
from spartan_core.studies.controller_comparison import ControllerComparison, ControllerRun  # noqa: E402
from spartan_core.studies.training_dynamics import GecoRun, PenaltyOutcome  # noqa: E402


def test_whole_number_policies_run_only_at_whole_budgets():
    assert baselines.policy_budgets("topk", [0.1, 1, 2.5, 4]) == [1.0, 4.0]
    assert baselines.policy_budgets("random", [0.1, 1, 2.5]) == [0.1, 1.0, 2.5]
    assert baselines.policy_budgets("sink", [0.5, 1, 2]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="^policies: "):
        baselines.policy_budgets("gate", [1])


def _point(policy, stage, k, ce, budget=None):
    return ParetoPoint(model="m", policy=policy, stage=stage, budget=budget, kept_per_query=k, kept_fraction=k / 10,
                       heldout_ce=ce, exact_match=None, steps=0 if stage == "as is" else 5, wall_time_s=0.0)


def _pareto(extra=()):
    points = [_point("window", "fine-tuned", 1.0, 2.0, 1), _point("window", "fine-tuned", 4.0, 1.0, 4),
              _point("window", "as is", 1.0, 3.0, 1), _point("window", "as is", 4.0, 2.5, 4), *extra,
              _point(baselines.LEARNED, "learned", 2.0, 1.2)]
    return Pareto(model="m", points=points, dense_ce=0.9)


def test_the_policy_is_read_at_the_learned_budget_in_log_keys():
    pareto = _pareto()
    assert math.isclose(pareto.ce_at_learned("window"), 1.5), "halfway between 1 and 4 keys in log keys"
    assert math.isclose(pareto.ce_at_learned("window", "as is"), 2.75)
    assert pareto.beaten_policies() == ["window"]
    assert "no policy matches it on both counts" in pareto.sentence and "1.25× the gate's" in pareto.sentence


def test_a_policy_with_a_better_point_beats_the_gate():
    dominating = [_point("topk", "fine-tuned", 2.0, 1.1, 2), _point("topk", "as is", 2.0, 1.9, 2)]
    pareto = _pareto(dominating)
    assert pareto.beaten_policies() == ["window"]
    assert "topk beats it on both counts" in pareto.sentence
    assert "1 of 2 fine-tuned fixed policies" in pareto.claim_sentence


def test_a_policy_only_above_the_learned_budget_is_described_at_its_smallest():
    pareto = Pareto(model="m", dense_ce=0.9, points=[
        _point("topk", "fine-tuned", 1.0, 1.8, 1), _point("topk", "fine-tuned", 2.0, 1.5, 2),
        _point("topk", "as is", 1.0, 2.0, 1), _point("topk", "as is", 2.0, 1.7, 2),
        _point("random", "fine-tuned", 0.05, 2.4, 0.05), _point("random", "fine-tuned", 0.2, 2.0, 0.2),
        _point("random", "as is", 0.05, 2.6, 0.05), _point("random", "as is", 0.2, 2.2, 0.2),
        _point(baselines.LEARNED, "learned", 0.1, 1.2)])
    assert pareto.ce_at_learned("topk") is None
    assert "topk already has CE 1.8 at its smallest budget, 1.00 keys per query (1.50× the gate's CE with " \
           "10.0× its keys)" in pareto.sentence, "a policy outside the budgets is never read as NaN"
    assert "random reaches CE 2.2 at that budget (1.83× the gate's)" in pareto.sentence


def test_pareto_runs_every_policy_at_its_budgets_and_the_learned_gate(tiny_zoo):
    pareto = baselines.pareto("shakespeare-lm", ["window", "random"], [0.5, 1], {"steps": 4, "floor_steps": 0},
                              seed=2, dense_steps=30)
    learned_call, *policy_calls, control_call = tiny_zoo
    assert learned_call[1] == {"seed": 2} and "policy" not in learned_call[1]
    assert control_call[1] == {"seed": 2, "policy": "dense"}, "the learned gate's compute-matched control"
    assert pareto.control.ce > 0 and "its compute-matched control" in pareto.sentence
    assert [(c[1]["policy"], c[1]["keys_per_query"]) for c in policy_calls] == [
        ("window", 1.0), ("random", 0.5), ("random", 1.0)], "window keeps whole keys only"
    assert all(c[2] == {"seed": 2, "steps": 30} for c in tiny_zoo), "one dense model for every run"
    frame = pareto.frame()
    assert len(frame) == 2 * 3 + 1 and list(frame["stage"]).count("learned") == 1
    tuned = frame[frame["stage"] == "fine-tuned"]
    assert (tuned["steps"] == 4).all() and (frame[frame["stage"] == "as is"]["steps"] == 0).all()
    window = frame[(frame["policy"] == "window")]
    assert (window["kept_per_query"] == 1.0).all(), "a one-key window keeps exactly one key per query"
    assert set(pareto.comparison()["policy"]) == {"window", "random"}
    assert list(pareto.table().index.get_level_values("policy")).count(baselines.LEARNED) == 1
    assert "4 against 6" in baselines.steps_sentence([pareto]) and "can only favour the gate" in \
        baselines.steps_sentence([pareto])
    fig = plots.pareto_panels(frame, dense_ce=pareto.dense_ce, dense_exact_match=None, title="t",
                              control_ce=pareto.control.ce)
    assert len(fig.axes) == 1, "no exact-match panel without exact match"
    assert "dense control (the gate's steps)" in fig.axes[0].get_legend_handles_labels()[1]
    plt.close(fig)


def _run(evals, tau=1.0, controller="geco", history=None, kept=0.5, seed=0):
    history = history if history is not None else pd.DataFrame({
        "phase": ["geco"] * 4, "log_beta": [math.log(1e-4), -1.0, math.log(1e-4), -2.0],
        "beta": [1e-4, math.exp(-1), 1e-4, math.exp(-2)], "beta_used": [1e-4] * 4, "step": [1, 2, 3, 4]})
    run = GecoRun(model="m", history=history, evals=pd.DataFrame(evals), tau=tau, tau_reference="dense",
                  beta_min=1e-4, dense_train_ce=0.5, dense_heldout_ce=0.6, heldout_split="test", best_step=30,
                  train_wall_time_s=2.0, outcome=PenaltyOutcome(None, 0.1, kept, 0.9), seed=seed)
    return ControllerRun(controller, 0.3 if controller == "fixed" else None, run)


def test_the_end_point_counts_only_evaluations_that_met_tau():
    run = _run({"step": [10, 20, 30, 40], "eval_ce": [0.5, 1.2, 0.7, 0.9],
                "eval_kept_per_query": [5.0, 0.1, 1.05, 1.0]})
    assert run.steps_near_end() == 30, "step 20 broke tau; 1.05 is within 10 % of 1.0"
    metrics = run.row()
    assert metrics["evals_over_tau"] == 0.25 and metrics["met_tau"] and metrics["end_kept_per_query"] == 0.5
    assert metrics["beta_collapses"] == 1, "beta left its clamp once and fell back"
    assert metrics["beta_off_clamp_step"] == 2
    never = _run({"step": [10], "eval_ce": [2.0], "eval_kept_per_query": [0.1]})
    assert never.steps_near_end() is None and math.isnan(never.row()["end_kept_per_query"])
    assert math.isnan(_run({"step": [10], "eval_ce": [0.5], "eval_kept_per_query": [1.0]},
                           controller="fixed").row()["beta_collapses"]), "a fixed beta cannot collapse"


def test_controllers_share_one_dense_model_and_differ_only_in_the_rule(tiny_zoo):
    comparison = controller_comparison.compare_controllers("shakespeare-lm", {"steps": 4, "eval_every": 2}, [0, 1],
                                                           betas=[0.5], dense_seed=3, kp=2.0)
    recipes = [c[1] for c in tiny_zoo]
    assert [(r["controller"], r.get("beta_init"), r.get("kp"), r["seed"]) for r in recipes] == [
        ("geco", None, None, 0), ("geco", None, None, 1), ("pi", None, 2.0, 0), ("pi", None, 2.0, 1),
        ("fixed", 0.5, None, 0), ("fixed", 0.5, None, 1)]
    assert all(c[2] == {"seed": 3} for c in tiny_zoo), "every run starts from training seed 3's dense model"
    assert comparison.labels == ["GECO", "PI", "fixed β = 0.5"] and comparison.seeds == [0, 1]
    table = comparison.table()
    assert list(table.index) == comparison.labels and table.loc["fixed β = 0.5", "β collapses"] == "–"
    assert comparison.best() in comparison.labels + [None]
    assert comparison.sentence.startswith("On shakespeare-lm, ")
    fig = plots.controller_traces(comparison.evals(), comparison.history(), tau=comparison.runs[0].run.tau,
                                  title="t")
    assert len(fig.axes) == 3
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(comparison.labels), "one min-max band over the seeds per controller"
    assert fig.axes[1].get_legend().get_title().get_text() == "mean over 2 seeds, band min–max"
    plt.close(fig)


def test_controller_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="^controllers: "):
        controller_comparison.compare_controllers("m", {}, [0], controllers=["fixed"])
    with pytest.raises(ValueError, match="^seeds: "):
        controller_comparison.compare_controllers("m", {}, [])
    with pytest.raises(ValueError, match="^policies: "):
        baselines.pareto("m", [], [1], {})


def _policies(name, beaten):
    """Five fine-tuned (and as-is) policies around a gate at 1 key and CE 1.0, the first ``beaten`` worse on both."""
    points = [_point(baselines.LEARNED, "learned", 1.0, 1.0)]
    for i, policy in enumerate(["topk", "window", "sink", "random", "threshold"]):
        ce = 2.0 if i < beaten else 0.5
        points += [_point(policy, "fine-tuned", 1.0, ce, 1), _point(policy, "as is", 1.0, ce + 1, 1)]
    return Pareto(model=name, points=points, dense_ce=0.9, seed=3)


def test_the_baselines_claim_needs_every_policy_beaten_on_every_model():
    claim = baselines.baselines_claim({"a": _policies("a", 5), "b": _policies("b", 5)})
    assert claim.verdict == "reproduced" and claim.rule == baselines.BASELINES_RULE
    assert claim.values == {"seed": 3, "models": ["a", "b"],
                            "beaten": {"a": ["topk", "window", "sink", "random", "threshold"],
                                       "b": ["topk", "window", "sink", "random", "threshold"]},
                            "fine_tuned_fewer_steps": {}}
    assert claim.sentence.startswith("a: learned gate 1.00 keys per query at CE 1; 5 of 5")
    assert baselines.baselines_claim({"a": _policies("a", 5), "b": _policies("b", 2)}).verdict == "partly"
    assert baselines.baselines_claim({"a": _policies("a", 4)}).verdict == "partly"
    assert baselines.baselines_claim({"a": _policies("a", 0), "b": _policies("b", 0)}).verdict == "not reproduced"
    with pytest.raises(ValueError, match="^paretos: "):
        baselines.baselines_claim({})


def test_policies_fine_tuned_for_fewer_steps_than_the_gate_cannot_test_the_claim():
    cheap = _policies("a", 5)
    cheap = Pareto(model="a", seed=3, dense_ce=0.9, points=[
        p if p.stage != "fine-tuned" else ParetoPoint(**{**vars(p), "steps": p.steps - 1}) for p in cheap.points])
    claim = baselines.baselines_claim({"a": cheap, "b": _policies("b", 5)})
    assert claim.verdict == "cannot test here" and claim.values["fine_tuned_fewer_steps"] == {"a": [4]}


def _comparison(ends):
    """Runs of each controller on seeds 0 and 1 ending at ``ends[controller]`` keys per query (None: never met τ)."""
    runs = []
    for controller, kept in ends.items():
        ce = 0.5 if kept is not None else 2.0
        for seed in (0, 1):
            run = _run({"step": [10], "eval_ce": [ce], "eval_kept_per_query": [kept or 1.0]},
                       controller=controller, kept=kept or 1.0, seed=seed)
            runs.append(run)
    return ControllerComparison("m", tuple(runs))


def test_the_controllers_claim_asks_whether_geco_has_the_best_end_point():
    claim = controller_comparison.controllers_claim(_comparison({"geco": 0.2, "pi": 0.4, "fixed": 0.3}))
    assert (claim.verdict, claim.values) == ("reproduced", {"seeds": [0, 1], "best": "GECO"})
    assert claim.rule == controller_comparison.CONTROLLERS_RULE
    assert claim.sentence == ("m, 2 seeds: GECO 0.200 keys per query, 1 β collapses; PI 0.400 keys per query, "
                              "1 β collapses; best end point meeting τ in every seed: GECO")
    other = controller_comparison.controllers_claim(_comparison({"geco": 0.4, "pi": 0.2}))
    assert (other.verdict, other.values["best"]) == ("partly", "PI"), "the rule never says not reproduced"
    fixed = controller_comparison.controllers_claim(_comparison({"geco": 0.4, "fixed": 0.2}))
    assert fixed.values["best"] == "fixed β = 0.3"
    none = controller_comparison.controllers_claim(_comparison({"geco": None, "pi": None}))
    assert none.verdict is None and none.rule is None and none.values["best"] is None, "unjudged: pending"
    assert "GECO never met τ" in none.sentence
