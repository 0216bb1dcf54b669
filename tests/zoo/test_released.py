"""The authors' released nanoGPT-style checkpoints, tested offline on synthetic files written in that exact format:
``{"model": state_dict, "model_args": ...}`` with Linear weights, a padded vocabulary and a ``_orig_mod.`` prefix."""

import math
import pickle

import pytest
import torch
from torch import nn

from spartan_core import count_edges, sparsify, zoo
from spartan_core.mechanism.sparsify import sparse_state
from spartan_core.zoo import released
from spartan_core.zoo.released import CheckpointRefused, convert_nanogpt, read_nanogpt_checkpoint

ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=64, bias=True, dropout=0.0)


class NanoGPT(nn.Module):
    """A direct re-implementation of nanoGPT's GPT (the reference the converted model must match), with an
    optional evaluation mask ``scores > 0`` on the causal edges, as the authors evaluate their sparse models."""

    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size, bias, **_):
        super().__init__()
        self.n_head = n_head
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList(nn.ModuleDict(dict(
                ln_1=nn.LayerNorm(n_embd, bias=bias), ln_2=nn.LayerNorm(n_embd, bias=bias),
                attn=nn.ModuleDict(dict(c_attn=nn.Linear(n_embd, 3 * n_embd, bias=bias),
                                        c_proj=nn.Linear(n_embd, n_embd, bias=bias))),
                mlp=nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, 4 * n_embd, bias=bias),
                                       c_proj=nn.Linear(4 * n_embd, n_embd, bias=bias))),
            )) for _ in range(n_layer)),
            ln_f=nn.LayerNorm(n_embd, bias=bias)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        for p in self.parameters():  # random, non-trivial biases and norms
            nn.init.normal_(p, std=0.3)

    def forward(self, idx, gated=False):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        for block in self.transformer.h:
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(x.shape[-1], dim=2)
            q, k, v = (z.view(*z.shape[:2], self.n_head, -1).transpose(1, 2) for z in (q, k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            probs = scores.masked_fill(~causal, -math.inf).softmax(-1)
            if gated:
                probs = probs * ((scores > 0) & causal)
            y = (probs @ v).transpose(1, 2).reshape(x.shape)
            x = x + block.attn.c_proj(y)
            x = x + block.mlp.c_proj(nn.functional.gelu(block.mlp.c_fc(block.ln_2(x))))
        return self.lm_head(self.transformer.ln_f(x))


def write_checkpoint(path, bias=True, vocab_size=ARGS["vocab_size"], **changes):
    torch.manual_seed(0)
    args = {**ARGS, "bias": bias, "vocab_size": vocab_size}
    reference = NanoGPT(**args).eval()
    state = {f"_orig_mod.{k}": v for k, v in reference.state_dict().items()}  # saved from a torch.compile'd model
    for i in range(args["n_layer"]):  # nanoGPT's causal-mask buffer (older versions save it)
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
    torch.save({"model": state, "model_args": args, "iter_num": 10, "best_val_loss": 3.0,
                "config": {"dataset": "openwebtext"}, **changes}, path)
    return reference


@pytest.mark.parametrize("bias", [True, False])
def test_converted_checkpoint_has_the_reference_logits_dense_and_under_the_authors_mask(tmp_path, bias):
    reference = write_checkpoint(tmp_path / "final.pth", bias=bias)
    model = convert_nanogpt(*read_nanogpt_checkpoint(tmp_path / "final.pth"))
    ids = torch.randint(60, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(ids), atol=1e-5, rtol=1e-5)
        sparsify(model, gate_bias=0.0)
        gated = reference(ids, gated=True)
        torch.testing.assert_close(model(input_ids=ids).logits, gated, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(gated, reference(ids), atol=1e-3)  # the mask matters here


def test_a_checkpoint_that_needs_unpickling_is_refused_in_one_line(tmp_path):
    path = tmp_path / "final.pth"
    torch.save({"model": {}, "model_args": ARGS, "trainer": pickle.PickleError("any object")}, path)
    with pytest.raises(CheckpointRefused, match=r"^checkpoint: .* is not a weights-only torch file \(torch\.load"
                                                r"\(weights_only=True\) refused it: [^\n]*\)$"):
        read_nanogpt_checkpoint(path)


def test_a_state_dict_that_is_not_gpt2_is_refused(tmp_path):
    write_checkpoint(tmp_path / "final.pth")
    state, args = read_nanogpt_checkpoint(tmp_path / "final.pth")
    with pytest.raises(CheckpointRefused, match=r"^checkpoint: not a nanoGPT GPT-2 state dict \(unexpected keys: "
                                                r"transformer\.h\.0\.attn\.rotary\.freq\)$"):
        convert_nanogpt({**state, "transformer.h.0.attn.rotary.freq": torch.ones(4)}, args)
    with pytest.raises(CheckpointRefused, match=r"^checkpoint: transformer\.wpe\.weight is \(32, 16\), the config "
                                                r"gives \(16, 16\)$"):
        convert_nanogpt(state, {**args, "block_size": 16})
    with pytest.raises(CheckpointRefused, match=r"^checkpoint: .* is not a nanoGPT checkpoint"):
        torch.save({"weights": state}, tmp_path / "other.pth")
        read_nanogpt_checkpoint(tmp_path / "other.pth")


@pytest.fixture
def released_here(tmp_path, monkeypatch):
    """The released name served from a synthetic file (no hub), GPT-2's vocabulary padded to 50,304 as theirs is:
    the list of names it was asked for."""
    write_checkpoint(tmp_path / "final.pth", vocab_size=50304)
    downloads = []
    monkeypatch.setattr(released, "_download", lambda name, file: downloads.append(name) or tmp_path / "final.pth")
    return downloads


def test_load_by_name_converts_once_and_measures_with_the_authors_mask(released_here, tmp_path):
    for _ in range(2):
        loaded = zoo.load("ansonisl/SparseGPT2", cache_dir=tmp_path / "cache", device="cpu")
    assert released_here == ["ansonisl/SparseGPT2"] and sparse_state(loaded.model) is None
    sparsify(loaded.model, gate_bias=loaded.info["gate_bias"])
    ids = torch.randint(60, (4, 16), generator=torch.Generator().manual_seed(2))
    assert 0 < count_edges(loaded.model, [{"input_ids": ids}]).kept_fraction < 1


def test_chapter_3_measures_a_released_model_beside_ours_and_marks_it_pending_offline(released_here, tmp_path):
    from spartan_core.studies.edges_and_loss import measure_model
    from spartan_core.studies.model_cards import EdgeSettings

    settings = EdgeSettings(eval_blocks=2, block_size=16, batch_size=2, cache_dir=tmp_path / "cache")
    _, row = measure_model("ansonisl/SparseGPT2", post_train=False, settings=settings, card=False)
    assert row.measured and row.gate_bias == 0.0 and row.gated.kept_fraction < 1


def test_offline_a_released_model_not_yet_downloaded_is_pending_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(zoo.HubUnavailableError, match=r"^model 'ansonisl/SparseGPT2': final\.pth is not in the "
                                                      r"local Hugging Face cache and the hub is unavailable"):
        zoo.load("ansonisl/SparseGPT2", cache_dir=tmp_path / "cache")


def test_a_name_in_the_authors_namespace_that_is_not_released_is_refused():
    with pytest.raises(ValueError, match=r"^model: 'ansonisl/SparseGPT3' is not a released checkpoint this loader "
                                         r"converts \(converted: ansonisl/SparseGPT2\)$"):
        zoo.load("ansonisl/SparseGPT3")


def test_chapters_4_and_6_put_a_released_model_beside_its_dense_model(released_here, tmp_path, monkeypatch):
    """load_pair, which chapters 4 and 6 call, pairs a release with the dense model it came from (here the same
    synthetic file stands in for GPT-2, which the hub would serve) and measures both; other seeds do not exist."""
    from spartan_core.studies import common
    from spartan_core.studies.attention_patterns import attention_seeds
    from spartan_core.studies.circuit_size import CircuitSettings, circuit_setup

    monkeypatch.setenv("SPARTAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(common.RELEASED_DENSE, "ansonisl/SparseGPT2", "ansonisl/SparseGPT2")
    monkeypatch.setattr(common, "RELEASED_HELDOUT_BLOCKS", 4)
    pair = common.load_pair("ansonisl/SparseGPT2")
    assert sparse_state(pair.sparse.model) is not None and sparse_state(pair.dense.model) is None
    assert pair.before.ce > 0 and 0 < pair.after.kept_fraction < 1
    assert pair.before.kept_fraction is None
    seeds, _ = attention_seeds([0], lambda seed: common.load_pair("ansonisl/SparseGPT2", seed=seed),
                               text_block=0, text_tokens=8, n_sequences=2, half=6, threshold=0.3, probe_seed=0)
    assert len(seeds.runs) == 1
    setup = circuit_setup("induction", "ansonisl/SparseGPT2", CircuitSettings(n_prompts=4, induction_half=6))
    assert setup.sparse_kept_fraction == pair.after.kept_fraction
    missing = common.load_pair("ansonisl/SparseGPT2", seed=1)
    assert isinstance(missing, common.Unavailable) and "released one checkpoint" in missing.reason
