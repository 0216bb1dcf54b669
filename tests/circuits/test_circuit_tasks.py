"""Circuit tasks: clean/corrupted pairs are what they claim to be, metrics read the right logits."""

import pytest
import torch

from spartan_core.circuits import (
    CircuitTask,
    addition_task,
    answer_logprob,
    greater_than_task,
    induction_task,
    ioi_task,
    logit_difference,
)
from spartan_core.circuits.tasks import IOI_NAMES, single_token_words
from spartan_core.data import addition


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoding():
    from spartan_core.data.tokenizers import gpt2_encoding

    return gpt2_encoding()


def one_hot_logits(task: CircuitTask, vocab: int, tokens_key="tokens", scale=50.0):
    """Logits that put (almost) all mass on the target tokens at the scored positions."""
    logits = torch.zeros(*task.clean_ids.shape, vocab)
    positions, tokens = task.targets["positions"], task.targets[tokens_key]
    rows = torch.arange(len(task))[:, None].expand_as(positions)
    logits[rows, positions, tokens] = scale
    return logits


def test_addition_pairs_differ_only_in_operands():
    task = addition_task(40, seed=3)
    assert task.clean_ids.shape == (40, addition.SEQ_LEN)
    differs = task.clean_ids != task.corrupt_ids
    assert not differs[:, [2, 5]].any() and not differs[:, addition.PROMPT_LEN:].any()
    assert differs[:, [0, 1, 3, 4]].any(1).all()
    for row, a, b in zip(task.clean_ids, task.groups["a"], task.groups["b"]):
        assert addition.decode(row) == addition.problem_text(int(a), int(b))
    # default digits 2, 3, 4: hundreds, tens, units, read at the position before each
    assert task.targets["positions"][0].tolist() == [7, 8, 9]
    assert torch.equal(task.targets["tokens"], task.clean_ids[:, 8:11])


def test_addition_metric_and_carry_filter():
    task = addition_task(10, seed=0, carry=["both"], metric="logit_diff", digits=(4,))
    assert (task.groups["carry"] == addition.CARRY_CLASSES.index("both")).all()
    logits = one_hot_logits(task, addition.VOCAB_SIZE)
    expected = 50.0 * (task.targets["wrong"] != task.targets["tokens"])[:, 0].float()
    assert torch.equal(task.metric(logits), expected) and expected.any()
    logprob = addition_task(10, seed=0)
    assert torch.allclose(logprob.metric(one_hot_logits(logprob, addition.VOCAB_SIZE)), torch.zeros(10), atol=1e-10)
    assert (logprob.metric(torch.zeros(10, 11, addition.VOCAB_SIZE)) < -2.4).all()  # uniform: log(1/12)


@pytest.mark.parametrize("bad", [dict(digits=(5,)), dict(metric="accuracy"), dict(carry=["many"]), dict(n=0),
                                 dict(n=10**6)])
def test_addition_refuses_bad_parameters(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        addition_task(**{"n": 8, **bad})


def test_induction_pairs():
    task = induction_task(50, 6, half=5, seed=0, prefix=(1,))
    clean, corrupt = task.clean_ids, task.corrupt_ids
    assert clean.shape == (6, 11) and (clean[:, 0] == 1).all()
    assert torch.equal(clean[:, 1:6], clean[:, 6:]) and torch.equal(corrupt[:, 6:], clean[:, 6:])
    assert (corrupt[:, 1:6] != clean[:, 6:]).any(1).all()
    assert torch.equal(task.targets["tokens"], clean[:, 7:])
    assert torch.equal(task.targets["positions"][0], torch.arange(6, 10))
    with pytest.raises(ValueError, match="vocab_size"):
        induction_task(8, 2, half=5)


def test_ioi_prompts(encoding):
    task = ioi_task(24, seed=1, encoding=encoding)
    assert single_token_words(IOI_NAMES, encoding) == list(IOI_NAMES)
    mask = task.attention_mask.bool()
    for i in range(len(task)):
        clean = task.clean_ids[i][mask[i]].tolist()
        corrupt = task.corrupt_ids[i][mask[i]].tolist()
        io, s = int(task.targets["tokens"][i, 0]), int(task.targets["wrong"][i, 0])
        assert clean.count(io) == 1 and clean.count(s) == 2 and io != s
        names = [t for t in corrupt if encoding.decode([t]).strip() in IOI_NAMES]
        assert len(names) == 3 and len(set(names)) == 3 and io not in corrupt and s not in corrupt
        assert int(task.targets["positions"][i, 0]) == len(clean) - 1
        assert not task.clean_ids[i][~mask[i]].ne(encoding.eot_token).any()
    assert task.groups["baba"].tolist()[:4] == [0, 1, 0, 1]


def test_ioi_logit_difference_sign(encoding):
    task = ioi_task(4, seed=0, encoding=encoding)
    logits = one_hot_logits(task, encoding.n_vocab)
    assert (logit_difference(logits, task.targets) == 50.0).all()
    logits = one_hot_logits(task, encoding.n_vocab, tokens_key="wrong")
    assert (task.metric(logits) == -50.0).all()


def test_greater_than_prompts_and_metric(encoding):
    task = greater_than_task(16, seed=0, encoding=encoding)
    differs = task.clean_ids != task.corrupt_ids
    assert (differs.sum(1) == 1).all()
    for i in range(len(task)):
        year = int(task.targets["threshold"][i])
        assert 2 <= year <= 98
        j = int(differs[i].nonzero())
        assert encoding.decode([int(task.clean_ids[i, j])]) == f"{year:02d}"
        assert encoding.decode([int(task.corrupt_ids[i, j])]) == "01"
        assert int(task.targets["positions"][i, 0]) == task.clean_ids.shape[1] - 1
    logits = torch.zeros(*task.clean_ids.shape, encoding.n_vocab)
    logits[:, -1, encoding.encode("99")[0]] = 50.0
    assert torch.allclose(task.metric(logits), torch.ones(len(task)), atol=1e-6)
    logits[:, -1, encoding.encode("99")[0]] = 0.0
    logits[:, -1, encoding.encode("00")[0]] = 50.0
    assert torch.allclose(task.metric(logits), -torch.ones(len(task)), atol=1e-6)


def test_task_checks_shapes_and_subsets():
    task = induction_task(30, 5, half=3)
    assert len(task.subset(slice(1, 3))) == 2 and len(task.subset(torch.tensor([True, False] * 2 + [True]))) == 3
    with pytest.raises(ValueError, match="corrupt_ids"):
        CircuitTask("x", task.clean_ids, task.corrupt_ids[:, :-1], task.targets, answer_logprob)
    with pytest.raises(ValueError, match="targets"):
        CircuitTask("x", task.clean_ids, task.corrupt_ids, {"positions": task.targets["positions"][:2]},
                    answer_logprob)


DOCSTRING_NAMES = ["name", "value", "path", "size", "key", "data", "mode", "file", "line", "text", "user_id"]


@pytest.fixture(scope="module")
def gpt2_fast():
    from spartan_core.data.tokenizers import gpt2_tokenizer

    return gpt2_tokenizer()


def test_docstring_corrupted_prompts_differ_from_clean_only_in_the_argument_names(gpt2_fast):
    from spartan_core.circuits import docstring_task, single_token_names

    names = single_token_names(gpt2_fast, DOCSTRING_NAMES)
    assert "user_id" not in names and "name" in names
    task = docstring_task(gpt2_fast, DOCSTRING_NAMES, ["encode", "read_all"], 24, seed=5)
    name_ids = {gpt2_fast(" " + n, add_special_tokens=False)["input_ids"][0] for n in names}
    mask = task.attention_mask.bool()
    assert task.clean_ids.shape == task.corrupt_ids.shape
    for row in range(len(task)):
        differ = (task.clean_ids[row] != task.corrupt_ids[row]) & mask[row]
        assert int(differ.sum()) == 5, "a, b, c in the def, a and b in the docstring"
        assert {int(t) for t in task.clean_ids[row][differ]} <= name_ids
        assert {int(t) for t in task.corrupt_ids[row][differ]} <= name_ids
        clean_names = {int(t) for t in task.clean_ids[row][differ]}
        assert not clean_names & {int(t) for t in task.corrupt_ids[row][differ]}
        text = gpt2_fast.decode(task.clean_ids[row][mask[row]])
        assert text.startswith("def ") and text.endswith(":param")
        position = int(task.targets["positions"][row, 0])
        assert position == int(mask[row].sum()) - 1
        answer = int(task.targets["tokens"][row, 0])
        wrong = task.targets["wrong"][row].tolist()
        assert answer in clean_names and set(wrong) < clean_names and answer not in wrong
        assert int(task.corrupt_ids[row][differ][2]) != answer  # the corrupted def does not name the answer
    assert torch.equal(docstring_task(gpt2_fast, DOCSTRING_NAMES, ["encode"], 4, seed=1).clean_ids,
                       docstring_task(gpt2_fast, DOCSTRING_NAMES, ["encode"], 4, seed=1).clean_ids)


def test_docstring_metric_is_the_answer_over_the_mean_distractor_and_accuracy_beats_every_one(gpt2_fast):
    from spartan_core.circuits import beats_distractors, docstring_task

    task = docstring_task(gpt2_fast, DOCSTRING_NAMES, ["encode"], 6, seed=0)
    logits = torch.zeros(*task.clean_ids.shape, 50257)
    rows = torch.arange(len(task))
    position = task.targets["positions"][:, 0]
    logits[rows, position, task.targets["tokens"][:, 0]] = 3.0
    logits[rows, position, task.targets["wrong"][:, 0]] = 1.0
    assert torch.allclose(task.metric(logits), torch.full((6,), 2.5))
    assert beats_distractors(logits, task.targets).all()
    logits[rows, position, task.targets["wrong"][:, 1]] = 4.0
    assert not beats_distractors(logits, task.targets).any()
    with pytest.raises(ValueError, match="argument_names"):
        docstring_task(gpt2_fast, ["user_id", "name"], ["f"], 2)
