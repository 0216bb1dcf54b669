"""spartan_core.studies.attention_patterns: text maps, induction heads dense vs sparse, the sentences they give."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_gpt2
from spartan_core.mechanism.sparsify import sparsify
from spartan_core.studies import attention_patterns as study
from spartan_core.studies.common import ModelPair, Unavailable
from spartan_core.studies.seeds import Seeds
from spartan_core.training.evaluate import HeldOut


class _Tokenizer:
    all_special_ids = [0]
    bos_token_id = None
    eos_token_id = 0

    def decode(self, ids):
        return f"t{ids[0]}"


def _pair():
    model = tiny_gpt2().eval()
    ids = torch.randint(1, 50, (3, 20))
    data = {"validation": {"input_ids": ids, "labels": ids.clone()}}
    info = {"heldout_split": "validation"}
    loaded = SimpleNamespace(name="toy", model=model, tokenizer=_Tokenizer(), data=data, info=info)
    sparse = SimpleNamespace(**{**vars(loaded), "model": sparsify(copy.deepcopy(model), gate_bias=0.0).eval()})
    return ModelPair("toy", loaded, sparse, SimpleNamespace(ce=1.5),
                     SimpleNamespace(ce=2.0, kept_fraction=0.25, kept_per_query=3.0))


def test_text_attention_counts_kept_keys_of_the_sparse_maps():
    text = study.text_attention(_pair(), text_block=1, text_tokens=8)
    assert text.tokens[0].startswith("t") and len(text.tokens) == 8
    assert text.dense.shape == text.sparse.shape == (2, 4, 8, 8)
    assert text.kept_keys_per_query.shape == (2, 4) and float(text.kept_keys_per_query.max()) <= 8
    table = text.kept_table()
    assert text.dense_keys_per_query == 4.5 and list(table.columns) == ["layer", "head", "kept_keys_per_query"]
    assert table["head"].tolist() == [0, 1, 2, 3] * 2 and table["layer"].tolist() == [0] * 4 + [1] * 4
    sentence = study.text_sentence(Seeds((_run(0, [[0.1]], [[0.1]], 0.1, text=text),)))
    assert "keys per query" in sentence and "4.5" in sentence


def _seeds(pair, seeds=(0,), **settings):
    settings = {"text_block": 0, "text_tokens": 8, "n_sequences": 2, "half": 6, "threshold": 0.9, "probe_seed": 0,
                **settings}
    return study.attention_seeds(list(seeds), lambda seed: pair, **settings)


def test_a_random_model_has_no_induction_head_and_cannot_test_the_claim():
    pair = _pair()
    runs, first_pair = _seeds(pair)
    run = runs.first
    assert first_pair is pair and not run.testable and run.dense.heads == []
    sentence = study.induction_sentence(runs)
    assert "no induction head" in sentence and "cannot test" in sentence
    assert list(run.scores_table().columns) == ["layer", "head", "dense_score", "sparse_score"]
    shown = run.shown_heads()
    assert len(shown) == 4 and all(isinstance(i, int) for h in shown for i in h)
    assert study.probe_maps(pair, run, shown).shape == (2, 4, 13, 13)
    json.dumps(study.seeds_metrics(runs))


def test_heads_above_the_threshold_are_named_only_in_sentences():
    scores = torch.tensor([[0.1, 0.5], [0.7, 0.3]])
    heads = study.InductionHeads("m", scores, 0.4)
    assert heads.heads == [(1, 0), (0, 1)] and heads.to_metrics()["heads"] == [[1, 0], [0, 1]]
    run = _run(0, scores, scores * 0.5, 0.1, threshold=0.4)
    assert run.testable and "seed 0: a1.h0, a0.h1 dense, none sparse" in study.induction_sentence(Seeds((run,)))
    assert run.shown_heads() == [(1, 0), (0, 1)]


def test_control_sentences_say_what_the_control_shows():
    assert study.control_sentence(None) == "No positive control was probed in this run."
    assert "pending" in study.control_sentence(Unavailable("smollm2-135m", "no weights"))
    found = study.InductionHeads("smollm2-135m", torch.tensor([[0.8, 0.1]]), 0.3)
    assert "finds induction heads where they exist" in study.control_sentence(found)
    assert "no training seeds" in study.control_sentence(found)
    claim = study.induction_claim(Unavailable("gpt2", "offline: no hub"), found, [0, 1])
    assert claim.sentence == ("gpt2: pending, not measured here (offline) Positive control smollm2-135m (dense, not "
                              "trained here: no seeds): 1 of 2 heads, an effective number of induction heads of 1.2.")
    assert claim.verdict == "cannot test here" and claim.values == {
        "available": False, "seeds": [0, 1], "testable_seeds": [], "induction_by_design": None, "dense_heads": None,
        "sparse_heads": None, "threshold_free": None}


def test_threshold_free_measures_count_heads_without_a_threshold():
    ablated = study.InductionHeads("m", torch.tensor([[0.8, 0.8], [0.0, 0.1]]), 0.9,
                                   ablation=torch.tensor([[0.5, 0.05], [0.2, -0.1]]))
    assert ablated.heads == [] and ablated.effective == pytest.approx(1.7 ** 2 / 1.29)
    assert ablated.critical == 2 and ablated.to_metrics()["critical"] == 2
    assert "2.2" in ablated.threshold_free() and "2 heads whose ablation alone" in ablated.threshold_free()
    assert study.InductionHeads("m", torch.ones(1, 2), 0.3).critical is None
    assert "not ablated one by one" in study.InductionHeads("m", torch.ones(30, 9), 0.3).threshold_free()
    run = _run(0, torch.tensor([[0.8, 0.8], [0.0, 0.1]]), torch.tensor([[0.8, 0.0], [0.0, 0.0]]), 0.1)
    assert run.row()["dense_effective_heads"] == pytest.approx(2.24, abs=0.01)
    assert run.row()["sparse_effective_heads"] == pytest.approx(1.0)
    assert "the dense copies have an effective number of induction heads of 2.2" in \
        study.induction_sentence(Seeds((run,)))


def test_heldout_induction_scores_both_models_on_their_own_heldout_blocks():
    pair = _pair()
    ids = torch.randint(1, 50, (3, 20))
    ids[:, 10:] = ids[:, :10]  # every block repeats itself, so every query of the second half is scored
    for loaded in (pair.dense, pair.sparse):
        loaded.data["validation"]["input_ids"] = ids
    sentence, scores = study.heldout_induction(pair, n_blocks=2, threshold=0.5)
    assert set(scores) == {"dense", "sparse"}
    assert all(s.scores.shape == (2, 4) for s in scores.values())
    assert sentence.startswith("On validation (2 of 3 rows), scored wherever a token repeats") and "sparse" in sentence


def test_the_contrast_model_sentence_says_whether_it_could_test_the_claim():
    assert "No natural-language toy" in study.contrast_sentence(None)
    none = study.InductionHeads("shakespeare-lm", torch.tensor([[0.02, 0.01]]), 0.3)
    assert "none of its 2 heads reaches 0.3" in study.contrast_sentence(none)
    assert "could not be tested" in study.contrast_sentence(none) and "0.020" in study.contrast_sentence(none)
    some = study.InductionHeads("shakespeare-lm", torch.tensor([[0.5, 0.01]]), 0.3)
    assert "1 of its 2 heads reach 0.3" in study.contrast_sentence(some)


def _run(seed, dense_scores, sparse_scores, kept_fraction, threshold=0.3, text=None, model="m"):
    """A planted seed: induction scores of both models and the pair's held-out numbers."""
    sparse_maps = torch.zeros(1, 2, 4, 4)
    sparse_maps[..., 0] = 0.5
    text = text or study.TextAttention("m", ["a", "b", "c", "d"], torch.ones(1, 2, 4, 4), sparse_maps)
    before = HeldOut(1.0 + seed)
    after = SimpleNamespace(ce=1.5 + seed, kept_fraction=kept_fraction, kept_per_query=2.0)
    return study.SeedRun(seed, before, after, text, study.InductionHeads(model, torch.as_tensor(dense_scores), threshold),
                         study.InductionHeads(model, torch.as_tensor(sparse_scores), threshold), torch.zeros(1, 4))


def test_seed_spreads_aggregate_each_seed_and_keep_every_row():
    runs = Seeds((_run(3, [[0.05, 0.01]], [[0.02, 0.0]], 0.1), _run(7, [[0.02, 0.03]], [[0.01, 0.04]], 0.3)))
    assert runs.seeds == [3, 7] and runs.first.seed == 3
    spreads = runs.spreads(study.HEADLINES)
    for found in spreads.values():
        assert found.n == 2 and found.low <= found.mean <= found.high
    assert spreads["kept_fraction"].values == (0.1, 0.3) and spreads["kept_fraction"].mean == pytest.approx(0.2)
    assert spreads["dense_max_score"].values == pytest.approx((0.05, 0.03))
    assert spreads["sparse_max_score"].values == pytest.approx((0.02, 0.04))
    assert spreads["text_kept_keys_per_query"].values == (1.0, 1.0)
    assert runs.per_seed()["seed"].tolist() == [3, 7] and study.induction_table(runs)["seed"].tolist() == [3, 7]
    scores = runs.stacked(study.SeedRun.scores_table)
    assert list(scores.columns[:3]) == ["seed", "layer", "head"] and scores["seed"].tolist() == [3, 3, 7, 7]
    assert runs.stacked(lambda run: run.text.kept_table())["seed"].tolist() == [3, 3, 7, 7]
    sentence = study.induction_sentence(runs)
    assert runs.where(lambda run: run.testable) == [] and "no induction head in any of 2 seeds" in sentence
    assert "the highest score is 0.040 (0.030–0.050 over 2 seeds)" in sentence
    assert "the sparse copies have 1 head(s) in every seed" not in sentence
    assert "20.00% (10.00%–30.00% over 2 seeds)" in study.models_sentence(runs)
    assert study.text_sentence(runs).startswith("Seed 3 (the maps above):")
    claim = study.induction_claim(runs, None, [3, 7])
    assert claim.sentence.startswith("The dense m has no induction head in any of 2 seeds: no head reaches 0.3, and "
                                     "the highest score is 0.040 (0.030–0.050 over 2 seeds).")
    assert "sparse copies have no head in any seed" in claim.sentence and "Per seed" not in claim.sentence
    metrics = json.loads(json.dumps(study.seeds_metrics(runs)))
    assert [row["seed"] for row in metrics["per_seed"]] == metrics["seeds"] == [3, 7]
    assert metrics["spreads"]["dense_max_score"]["n"] == 2


def test_seeds_with_and_without_induction_heads_are_told_apart():
    runs = Seeds((_run(0, [[0.6, 0.4]], [[0.5, 0.1]], 0.1), _run(1, [[0.1, 0.2]], [[0.1, 0.0]], 0.1),
                  _run(2, [[0.5, 0.2]], [[0.6, 0.4]], 0.1)))
    metrics = study.seeds_metrics(runs)
    assert metrics["testable_seeds"] == [0, 2] and metrics["fewer_sparse_heads_seeds"] == [0]
    sentence = study.induction_sentence(runs)
    assert "fewer in 1 of the 2 seed(s)" in sentence and "Seed 1 cannot test the claim" in sentence
    assert "the dense m has 1 (0–2 over 3 seeds) heads of 2" in sentence
    assert "seed 0: a0.h0, a0.h1 dense, a0.h0 sparse" in sentence and "in any of" not in sentence
    assert runs.spread("dense_induction_heads").values == (2.0, 0.0, 1.0)
    claim = study.induction_claim(runs, None, [0, 1, 2])
    assert "the dense m has 1 (0–2 over 3 seeds) heads of 2, and its highest score is 0.433 (0.200–0.600 over 3 " \
           "seeds)" in claim.sentence
    assert "Seed 1 cannot test the claim" in claim.sentence and "Per seed" not in claim.sentence
    assert claim.values["testable_seeds"] == [0, 2] and claim.values["dense_heads"]["values"] == [2.0, 0.0, 1.0]


def _counts(dense_heads, sparse_heads):
    """Seeds whose dense model has ``dense_heads[i]`` induction heads and whose sparse copy has ``sparse_heads[i]``."""
    return Seeds(tuple(_run(seed, [[0.5] * d + [0.0] * (4 - d)], [[0.5] * s + [0.0] * (4 - s)], 0.1)
                       for seed, (d, s) in enumerate(zip(dense_heads, sparse_heads))))


def test_the_rule_reaches_every_verdict():
    """Reproduced at most half the dense model's mean head count, partly at most three quarters, else not; cannot
    test here when the model is unavailable or no seed's dense model has an induction head."""
    verdicts = {case: study.induction_claim(_counts(*case), None, [0, 1]).verdict
                for case in [((4, 4), (2, 2)), ((4, 4), (3, 3)), ((4, 2), (2, 2)), ((4, 4), (4, 3)), ((0, 0), (1, 0))]}
    assert verdicts == {((4, 4), (2, 2)): "reproduced", ((4, 4), (3, 3)): "partly", ((4, 2), (2, 2)): "partly",
                        ((4, 4), (4, 3)): "not reproduced", ((0, 0), (1, 0)): "cannot test here"}
    claim = study.induction_claim(_counts((4, 4), (4, 3)), None, [0, 1])
    assert claim.rule == study.INDUCTION_RULE and claim.id == "induction_heads"
    assert claim.to_record()["verdict"] == "not reproduced" and claim.values["sparse_heads"]["mean"] == 3.5
    assert study.induction_claim(Unavailable("gpt2", "offline"), None, [0]).verdict == "cannot test here"


def test_a_model_made_to_have_induction_heads_cannot_test_the_claim():
    """python-lm's copying curriculum builds its induction heads in: however few its sparse copy keeps, the claim about
    heads a general LM learns is not tested there, and the claim says why."""
    runs = Seeds(tuple(_run(seed, [[0.5] * 4], [[0.5, 0.0, 0.0, 0.0]], 0.1, model="python-lm") for seed in (0, 1)))
    claim = study.induction_claim(runs, None, [0, 1])
    assert claim.verdict == "cannot test here" and "copying curriculum" in claim.values["induction_by_design"]
    assert "there by design" in claim.sentence and claim.values["sparse_heads"]["mean"] == 1.0


def test_attention_seeds_loads_every_seed_and_keeps_the_first_pair():
    loaded = []

    def load(seed):
        loaded.append(seed)
        return _pair()

    runs, first_pair = study.attention_seeds([4, 5], load, text_block=0, text_tokens=8, n_sequences=2, half=6,
                                             threshold=0.9, probe_seed=0)
    assert loaded == [4, 5] and runs.seeds == [4, 5] and first_pair is not None
    assert runs.spread("kept_fraction").n == 2 and runs.per_seed()["kept_fraction"].tolist() == [0.25, 0.25]
    pending = study.attention_seeds([0, 1], lambda seed: Unavailable("gpt2", "offline"), text_block=0, text_tokens=8,
                                    n_sequences=2, half=6, threshold=0.9, probe_seed=0)
    assert isinstance(pending, Unavailable)
