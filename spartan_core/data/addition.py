"""The paper's Figure-1 toy task: two-digit addition as 11-character strings.

A problem ``a + b`` (0 <= a, b <= 99) is written ``ab+cd=`` followed by the sum zero-padded to five digits,
e.g. 53 + 21 -> ``53+21=00074``. Every character is one token; the vocabulary is the ten digits, ``+`` and ``=``
(12 tokens, ids 0-9 are the digits themselves). There is deliberately no BOS token: every position is a real
character, so attention maps are exactly the 11 x 11 grids of Figure 1, and gated attention does not need a
sink because a row of the masked attention may sum to less than one.

Carry classes (``CARRY_CLASSES``), for a = 10*a1 + a0 and b = 10*b1 + b0:

* units carry: a0 + b0 >= 10;
* tens carry: a1 + b1 + (units carry) >= 10 -- the incoming carry counts, so 43+59 carries in both places;
* class ``"none"``: neither (53+21), ``"units"``: units carry only (36+28), ``"tens"``: tens carry only
  (81+27), ``"both"``: both (43+59, 45+55).

All 10,000 problems are split once, by a seeded permutation, into train and test (80/20 by default); the split
never depends on global random state. Datasets are token-block dicts (see ``spartan_core.training.batches``) with
``input_ids`` [N, 11] and ``labels`` [N, 11] (-100 on the six prompt positions, so only the five answer digits
are scored), plus three 1-D metadata columns used by the evaluation here: ``a``, ``b`` (operands) and
``carry`` (index into ``CARRY_CLASSES``).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "VOCAB",
    "VOCAB_SIZE",
    "SEQ_LEN",
    "PROMPT_LEN",
    "ANSWER_DIGITS",
    "CARRY_CLASSES",
    "METADATA_KEYS",
    "encode",
    "decode",
    "tokenizer",
    "problem_text",
    "carry_class",
    "split_indices",
    "addition_data",
    "answer_correct",
    "exact_match",
]

VOCAB = "0123456789+="
VOCAB_SIZE = len(VOCAB)
PROMPT_LEN = 6  # "ab+cd="
ANSWER_DIGITS = 5
SEQ_LEN = PROMPT_LEN + ANSWER_DIGITS
CARRY_CLASSES = ("none", "units", "tens", "both")
METADATA_KEYS = ("a", "b", "carry")
N_PROBLEMS = 100 * 100
_TOKEN_ID = {ch: i for i, ch in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    """Characters to token ids; refuses characters outside the vocabulary."""
    try:
        return [_TOKEN_ID[ch] for ch in text]
    except KeyError as err:
        raise ValueError(f"text: character {err.args[0]!r} is not in the addition vocabulary {VOCAB!r}") from None


def decode(ids) -> str:
    """Token ids (list, tensor or array) back to characters."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return "".join(VOCAB[int(i)] for i in ids)


def tokenizer():
    """The character vocabulary as a transformers fast tokenizer (one token per character, no special tokens),
    so notebooks can treat the toy like any other model; ids equal :func:`encode`'s."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(dict(_TOKEN_ID)))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def _check_operand(name: str, value: int) -> None:
    if not 0 <= value <= 99:
        raise ValueError(f"{name}: operands are 0..99, got {value}")


def problem_text(a: int, b: int) -> str:
    """The 11-character string of a + b, e.g. ``problem_text(53, 21) == "53+21=00074"``."""
    _check_operand("a", a)
    _check_operand("b", b)
    return f"{a:02d}+{b:02d}={a + b:05d}"


def carry_class(a: int, b: int) -> str:
    """One of ``CARRY_CLASSES`` (definitions in the module docstring)."""
    _check_operand("a", a)
    _check_operand("b", b)
    units = (a % 10) + (b % 10) >= 10
    tens = (a // 10) + (b // 10) + int(units) >= 10
    return CARRY_CLASSES[int(units) + 2 * int(tens)]


def _all_problems() -> tuple[np.ndarray, np.ndarray]:
    a, b = np.divmod(np.arange(N_PROBLEMS), 100)
    return a, b


def split_indices(seed: int = 0, test_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """Problem indices (a*100 + b) of the fixed train/test split: disjoint, together all 10,000, sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be strictly between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(N_PROBLEMS)
    n_test = int(round(N_PROBLEMS * test_fraction))
    return {
        "train": torch.from_numpy(np.sort(order[n_test:])),
        "test": torch.from_numpy(np.sort(order[:n_test])),
    }


def addition_data(split: str = "train", *, seed: int = 0, test_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """Token-block dataset of one split (``"train"``, ``"test"`` or ``"all"``) with carry labels and operands."""
    if split == "all":
        index = torch.arange(N_PROBLEMS)
    elif split in ("train", "test"):
        index = split_indices(seed, test_fraction)[split]
    else:
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    a_all, b_all = _all_problems()
    a, b = a_all[index.numpy()], b_all[index.numpy()]
    digits = np.stack(
        [a // 10, a % 10, np.full_like(a, _TOKEN_ID["+"]), b // 10, b % 10, np.full_like(a, _TOKEN_ID["="])]
        + [((a + b) // 10 ** k) % 10 for k in range(ANSWER_DIGITS - 1, -1, -1)],
        axis=1,
    )
    input_ids = torch.from_numpy(digits).long()
    labels = input_ids.clone()
    labels[:, :PROMPT_LEN] = -100
    units = (a % 10) + (b % 10) >= 10
    tens = (a // 10) + (b // 10) + units >= 10
    return {
        "input_ids": input_ids,
        "labels": labels,
        "a": torch.from_numpy(a).long(),
        "b": torch.from_numpy(b).long(),
        "carry": torch.from_numpy(units.astype(np.int64) + 2 * tens.astype(np.int64)),
    }


@torch.no_grad()
def answer_correct(model, data: dict[str, torch.Tensor], batch_size: int = 2000) -> torch.Tensor:
    """Bool [N]: every answer digit is the argmax of the model given the true prefix.

    Teacher-forced argmax on all answer positions equals greedy decoding's exact match: greedy decoding
    reproduces the true prefix step by step exactly when each of these argmaxes is right.
    A sparsified model is evaluated with its deterministic masks (eval mode); the train/eval mode is restored.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        correct = []
        for start in range(0, len(data["input_ids"]), batch_size):
            ids = data["input_ids"][start:start + batch_size].to(device)
            logits = model(input_ids=ids).logits
            predicted = logits[:, PROMPT_LEN - 1:SEQ_LEN - 1].argmax(-1)
            correct.append((predicted == ids[:, PROMPT_LEN:]).all(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(correct)


def exact_match(model, data: dict[str, torch.Tensor], batch_size: int = 2000) -> dict[str, float]:
    """Exact-match accuracy overall (``"all"``) and per carry class, plus problem counts (``"n_<class>"``)."""
    correct = answer_correct(model, data, batch_size).float()
    result = {"all": float(correct.mean()), "n_all": int(correct.numel())}
    for index, name in enumerate(CARRY_CLASSES):
        chosen = data["carry"] == index
        result[name] = float(correct[chosen].mean()) if chosen.any() else float("nan")
        result[f"n_{name}"] = int(chosen.sum())
    return result
