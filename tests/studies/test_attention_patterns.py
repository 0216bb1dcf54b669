"""spartan_core.studies.attention_patterns: text maps, induction heads dense vs sparse, the sentences they give."""

import copy
import json
from types import SimpleNamespace

import torch

from conftest import tiny_gpt2
from spartan_core.mechanism.sparsify import sparsify
from spartan_core.studies import attention_patterns as study
from spartan_core.studies.common import ModelPair, Unavailable


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
    return ModelPair("toy", loaded, sparse)


def test_text_attention_counts_kept_keys_of_the_sparse_maps():
    text = study.text_attention(_pair(), text_block=1, text_tokens=8)
    assert text.tokens[0].startswith("t") and len(text.tokens) == 8
    assert text.dense.shape == text.sparse.shape == (2, 4, 8, 8)
    assert text.kept_keys_per_query.shape == (2, 4) and float(text.kept_keys_per_query.max()) <= 8
    assert text.dense_keys_per_query == 4.5 and list(text.kept_table().columns) == [0, 1, 2, 3]
    assert "keys per query" in text.sentence and "4.5" in text.sentence


def test_a_random_model_has_no_induction_head_and_cannot_test_the_claim():
    pair = _pair()
    induction = study.compare_induction(pair, n_sequences=2, half=6, threshold=0.9, seed=0)
    assert not induction.testable and induction.dense.heads == []
    assert "no induction head" in induction.sentence and "cannot test" in induction.sentence
    assert list(induction.scores_table().columns) == ["layer", "head", "dense_score", "sparse_score"]
    shown = induction.shown_heads()
    assert len(shown) == 4 and all(isinstance(i, int) for h in shown for i in h)
    assert study.probe_maps(pair, induction, shown).shape == (2, 4, 13, 13)
    json.dumps(induction.to_metrics())
    claim = study.induction_claim(induction, None)
    assert claim.startswith("toy: 0 of 8 heads") and "cannot test the claim" in claim


def test_heads_above_the_threshold_are_named_only_in_sentences():
    scores = torch.tensor([[0.1, 0.5], [0.7, 0.3]])
    heads = study.InductionHeads("m", scores, 0.4)
    assert heads.heads == [(1, 0), (0, 1)] and heads.to_metrics()["heads"] == [[1, 0], [0, 1]]
    comparison = study.InductionComparison("m", heads, study.InductionHeads("m", scores * 0.5, 0.4), torch.zeros(1, 4))
    assert comparison.testable and "(L1H0, L0H1)" in comparison.sentence
    assert comparison.shown_heads() == [(1, 0), (0, 1)]


def test_control_sentences_say_what_the_control_shows():
    assert study.control_sentence(None) == "No positive control was probed in this run."
    assert "pending" in study.control_sentence(Unavailable("smollm2-135m", "no weights"))
    found = study.InductionHeads("smollm2-135m", torch.tensor([[0.8, 0.1]]), 0.3)
    assert "finds induction heads where they exist" in study.control_sentence(found)
    assert study.induction_claim(Unavailable("gpt2", "offline: no hub"), found) == (
        "gpt2: pending, not measured here (offline); positive control smollm2-135m (dense): 1 of 2 heads")
