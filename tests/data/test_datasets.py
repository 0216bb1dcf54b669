"""Data formats: the addition toy, tokenizers, text corpora, block packing, induction probes."""

import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from spartan_core._util import HubUnavailableError, hub_unavailable_reason
from spartan_core.data import addition, induction, text, tokenizers


# ------------------------------------------------------------------------------------------------ addition


def test_problem_strings_have_the_papers_eleven_token_format():
    assert addition.problem_text(53, 21) == "53+21=00074"
    assert addition.problem_text(7, 3) == "07+03=00010"
    assert addition.problem_text(99, 99) == "99+99=00198"
    data = addition.addition_data("all")
    assert data["input_ids"].shape == (10_000, 11)
    row = (data["a"] == 53) & (data["b"] == 21)
    assert addition.decode(data["input_ids"][row][0]) == "53+21=00074"
    for i in range(0, 10_000, 997):
        a, b = int(data["a"][i]), int(data["b"][i])
        assert addition.decode(data["input_ids"][i]) == addition.problem_text(a, b)


def test_labels_score_only_the_five_answer_digits():
    data = addition.addition_data("train")
    labels = data["labels"]
    assert (labels[:, :6] == -100).all()
    assert torch.equal(labels[:, 6:], data["input_ids"][:, 6:])


@pytest.mark.parametrize("a, b, expected", [
    (53, 21, "none"), (36, 28, "units"), (43, 59, "both"), (81, 27, "tens"), (45, 55, "both"),
    (99, 1, "both"), (50, 50, "tens"), (5, 5, "units"), (0, 0, "none"), (95, 4, "none"),
])
def test_carry_classes_of_known_examples(a, b, expected):
    assert addition.carry_class(a, b) == expected


def test_carry_column_matches_the_definition_for_every_problem():
    data = addition.addition_data("all")
    names = [addition.CARRY_CLASSES[int(c)] for c in data["carry"]]
    assert names == [addition.carry_class(int(a), int(b)) for a, b in zip(data["a"], data["b"])]


def test_split_is_fixed_disjoint_and_complete():
    first, second = addition.split_indices(), addition.split_indices()
    assert torch.equal(first["train"], second["train"]) and torch.equal(first["test"], second["test"])
    assert len(first["train"]) == 8000 and len(first["test"]) == 2000
    assert not set(first["train"].tolist()) & set(first["test"].tolist())
    assert sorted(first["train"].tolist() + first["test"].tolist()) == list(range(10_000))
    assert not torch.equal(addition.split_indices(seed=1)["test"], first["test"])
    test = addition.addition_data("test")
    assert torch.equal(test["a"] * 100 + test["b"], first["test"])


def test_encode_decode_and_tokenizer_agree():
    text_ = "36+28=00064"
    ids = addition.encode(text_)
    assert addition.decode(ids) == text_
    tok = addition.tokenizer()
    assert tok(text_)["input_ids"] == ids
    assert tok.decode(ids) == text_
    with pytest.raises(ValueError, match="^text:"):
        addition.encode("1-2")


def test_bad_parameters_are_refused_with_the_parameter_name():
    with pytest.raises(ValueError, match="^split:"):
        addition.addition_data("validation")
    with pytest.raises(ValueError, match="^test_fraction:"):
        addition.split_indices(test_fraction=1.5)
    with pytest.raises(ValueError, match="^a:"):
        addition.problem_text(100, 1)


class _Oracle(nn.Module):
    """Predicts the true next token everywhere, except the last answer digit of problems of one carry class."""

    def __init__(self, wrong_class: int | None = None):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.wrong_class = wrong_class

    def forward(self, input_ids):
        nxt = torch.roll(input_ids, -1, dims=1)
        if self.wrong_class is not None:
            a = input_ids[:, 0] * 10 + input_ids[:, 1]
            b = input_ids[:, 3] * 10 + input_ids[:, 4]
            units = (a % 10 + b % 10) >= 10
            tens = (a // 10 + b // 10 + units.long()) >= 10
            chosen = (units.long() + 2 * tens.long()) == self.wrong_class
            nxt[chosen, 9] = (nxt[chosen, 9] + 1) % 10
        return SimpleNamespace(logits=nn.functional.one_hot(nxt, addition.VOCAB_SIZE).float())


def test_exact_match_overall_and_per_carry_class():
    data = addition.addition_data("test")
    perfect = addition.exact_match(_Oracle(), data)
    assert perfect["all"] == 1.0 and all(perfect[c] == 1.0 for c in addition.CARRY_CLASSES)
    assert sum(perfect[f"n_{c}"] for c in addition.CARRY_CLASSES) == perfect["n_all"] == 2000
    flawed = addition.exact_match(_Oracle(wrong_class=1), data)
    assert flawed["units"] == 0.0 and flawed["none"] == flawed["tens"] == flawed["both"] == 1.0
    assert flawed["all"] == pytest.approx(1 - flawed["n_units"] / 2000)


# ---------------------------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("spartan_cache")


def test_gpt2_tokenizer_reproduces_known_gpt2_ids(cache):
    tok = tokenizers.gpt2_tokenizer(cache_dir=cache)
    enc = tokenizers.gpt2_encoding()
    assert tok("Hello world")["input_ids"] == [15496, 995] == enc.encode("Hello world")
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    assert tok.eos_token_id == 50256 and len(tok) == 50257
    sample = "It's 1999!  Don't\n\nstop:\tthe   music <|endoftext|> naïve 中文"
    ids = tok(sample)["input_ids"]
    assert ids == enc.encode(sample, allowed_special="all")
    assert tok.decode(ids) == sample
    again = tokenizers.gpt2_tokenizer(cache_dir=cache)  # from the cached tokenizer.json
    assert again(sample)["input_ids"] == ids


def test_trained_bpe_round_trips_and_is_cached(tmp_path):
    corpus = ["to be or not to be, that is the question"] * 50 + ["whether 'tis nobler in the mind"] * 50
    path = tmp_path / "bpe.json"
    tok = tokenizers.train_bpe(corpus, 300, path)
    assert 257 < len(tok) <= 300 and tok.eos_token_id == 0 and path.is_file()
    ids = tok("to be, or not to be")["input_ids"]
    assert tok.decode(ids) == "to be, or not to be"
    assert tokenizers.train_bpe(["unrelated"], 300, path)("to be")["input_ids"] == tok("to be")["input_ids"]
    with pytest.raises(ValueError, match="^vocab_size:"):
        tokenizers.train_bpe(corpus, 100)


# --------------------------------------------------------------------------------------------------- text


def test_pack_blocks_cuts_a_stream_into_contiguous_blocks():
    blocks = text.pack_blocks(list(range(103)), 10)["input_ids"]
    assert blocks.shape == (10, 10) and blocks.dtype == torch.long
    assert torch.equal(blocks.flatten(), torch.arange(100))
    spread = text.pack_blocks(list(range(100)), 10, max_blocks=3)["input_ids"]
    assert spread[:, 0].tolist() == [0, 40, 90]
    with pytest.raises(ValueError, match="^block_size:"):
        text.pack_blocks([1, 2, 3], 10)


def test_bigram_baseline_on_a_predictable_stream():
    stream = torch.arange(2000) % 7
    train = text.pack_blocks(stream, 20)
    val = text.pack_blocks(stream[3:], 20)
    result = text.bigram_ce(train, val)
    assert result["ce"] < 0.05
    assert result["unigram_ce"] == pytest.approx(torch.log(torch.tensor(7.0)).item(), abs=0.01)
    assert result["tokens"] == val["input_ids"].shape[0] * 19


def test_shakespeare_is_split_by_whole_plays():
    plays = text.shakespeare_plays()
    assert len(plays) == 37 and "hamlet" in plays and "sonnets" not in plays
    tok = text.shakespeare_tokenizer()
    assert len(tok) == 2048
    data = text.shakespeare_data(tok, block_size=128)
    train, val = data["train"]["input_ids"], data["validation"]["input_ids"]
    assert train.shape[1] == val.shape[1] == 128
    assert 0.05 < val.numel() / (train.numel() + val.numel()) < 0.25
    val_text = tok.decode(val[:4].flatten())
    assert "HAMLET" in val_text
    assert "HAMLET, PRINCE OF DENMARK" not in tok.decode(train.flatten())
    with pytest.raises(ValueError, match="^val_plays:"):
        text.shakespeare_data(tok, val_plays=["not_a_play"])


def test_kjv_is_a_second_evaluation_text():
    books = text.kjv_books()
    assert len(books) == 66 and next(iter(books)) == "Genesis"
    assert books["Genesis"].startswith("In the beginning God created the heaven and the earth.")
    tok = text.shakespeare_tokenizer()
    blocks = text.kjv_data(tok, block_size=64, max_blocks=20)["input_ids"]
    assert blocks.shape == (20, 64)


def test_hub_text_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tok = text.shakespeare_tokenizer()
    started = time.perf_counter()
    with pytest.raises(HubUnavailableError) as err:
        text.hub_text_data("Skylion007/openwebtext", tok)
    assert time.perf_counter() - started < 5
    message = str(err.value)
    assert "\n" not in message and "Skylion007/openwebtext" in message and "HF_DATASETS_OFFLINE" in message


def test_unreachable_hub_is_detected_quickly_without_offline_flags(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.spartan-tests.invalid")
    started = time.perf_counter()
    reason = hub_unavailable_reason(timeout_s=2.0)
    assert time.perf_counter() - started < 3
    assert reason.startswith("no connection to hub.spartan-tests.invalid")


def test_hub_text_reads_a_local_file_the_same_way(tmp_path):
    tok = text.shakespeare_tokenizer()
    file = tmp_path / "corpus.txt"
    file.write_text("\n".join(["Friends, Romans, countrymen, lend me your ears."] * 40))
    blocks = text.hub_text_data(str(file), tok, block_size=16, max_tokens=160)["input_ids"]
    assert blocks.shape == (10, 16)
    assert "Romans" in tok.decode(blocks[0])


# ---------------------------------------------------------------------------------------------- induction


def test_induction_data_repeats_distinct_random_tokens():
    data = induction.induction_data(6, 10, 50, seed=3, low=5, bos_token_id=1)
    ids = data["input_ids"]
    assert ids.shape == (6, 21) and (ids[:, 0] == 1).all()
    first, second = ids[:, 1:11], ids[:, 11:]
    assert torch.equal(first, second)
    assert all(len(set(row.tolist())) == 10 for row in first)
    assert first.min() >= 5 and first.max() < 50
    assert (data["labels"][:, :12] == -100).all() and torch.equal(data["labels"][:, 12:], ids[:, 12:])
    assert torch.equal(induction.induction_data(6, 10, 50, seed=3, low=5, bos_token_id=1)["input_ids"], ids)
    big = induction.induction_data(2, 30, 50_257, seed=0)["input_ids"]
    assert big.shape == (2, 60) and torch.equal(big[:, :30], big[:, 30:])


def test_distinct_random_tokens_are_distinct_per_row_and_seeded():
    small = induction.distinct_random_tokens(5, 8, 20, seed=1, low=4)
    assert small.shape == (5, 8) and small.min() >= 4 and small.max() < 20
    assert all(len(set(row.tolist())) == 8 for row in small)
    assert torch.equal(induction.distinct_random_tokens(5, 8, 20, seed=1, low=4), small)
    big = induction.distinct_random_tokens(2, 16, 50_257, seed=0)
    assert all(len(set(row.tolist())) == 16 for row in big)
    with pytest.raises(ValueError, match="^vocab_size: "):
        induction.distinct_random_tokens(2, 10, 12, low=4)


def test_random_token_range_skips_special_tokens_and_starts_with_end_of_text():
    class Tok:
        all_special_ids = [0, 1]
        bos_token_id = None
        eos_token_id = 0

    assert induction.random_token_range(Tok(), vocab_size=64) == (2, 0)
    Tok.bos_token_id, Tok.all_special_ids = 5, [60]
    assert induction.random_token_range(Tok(), vocab_size=64) == (0, 5), "specials at the top leave the range whole"


def test_induction_targets_point_after_the_previous_occurrence():
    ids = torch.tensor([[7, 1, 2, 3, 1, 2, 3]])
    assert induction.induction_targets(ids).tolist() == [[-1, -1, -1, -1, 2, 3, 4]]


class _FakeAttentionModel(nn.Module):
    """Two layers of two heads; only layer 1 head 0 attends exactly to the induction target."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(_attn_implementation="eager")

    def forward(self, input_ids, output_attentions=False):
        b, t = input_ids.shape
        uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]
        layers = [uniform.expand(b, 2, t, t).clone() for _ in range(2)]
        target = induction.induction_targets(input_ids)
        onehot = nn.functional.one_hot(target.clamp_min(0), t).float()
        layers[1][:, 0] = torch.where((target >= 0)[..., None], onehot, uniform)
        return SimpleNamespace(attentions=tuple(layers))


def test_induction_scores_find_an_induction_head():
    data = induction.induction_data(4, 8, 30, seed=0)
    scores = induction.induction_scores(_FakeAttentionModel(), data, batch_size=3)
    assert scores.shape == (2, 2)
    assert scores[1, 0] == pytest.approx(1.0)
    expected_uniform = torch.tensor([1.0 / (9 + j) for j in range(8)]).mean()
    assert scores[0, 0] == pytest.approx(float(expected_uniform), rel=1e-5)


def test_induction_scores_on_a_real_gpt2_have_one_value_per_head():
    from conftest import tiny_gpt2

    model = tiny_gpt2(vocab=40, layers=2, heads=2, width=16)
    before = model.config._attn_implementation
    scores = induction.induction_scores(model, induction.induction_data(3, 6, 40), batch_size=2)
    assert scores.shape == (2, 2) and (scores > 0).all() and (scores <= 1).all()
    assert model.config._attn_implementation == before
