"""Circuit tasks: clean/corrupted prompt pairs and the metric read off the logits.

A :class:`CircuitTask` carries everything an intervention needs: ``clean_ids`` and ``corrupt_ids`` of the same
shape [N, T] (pairs differ only where the task says), an optional padding mask shared by both, per-example
``targets`` the metric reads, per-example ``groups`` for slicing results (e.g. carry class), and the metric
itself, ``metric_fn(logits [N, T, V], targets) -> [N]`` (higher = more of the clean behaviour).

Tasks here: two-digit addition (the paper's toy, built on :mod:`spartan_core.data.addition`), induction on
repeated random tokens, IOI and Greater-Than on GPT-2's BPE (names, templates and years generated in code, every
varying word checked to be one token), and Docstring on a code model's own tokenizer (real argument names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = [
    "CircuitTask",
    "answer_logprob",
    "logit_difference",
    "probability_difference",
    "addition_task",
    "induction_task",
    "ioi_task",
    "greater_than_task",
    "docstring_task",
    "single_token_names",
    "distractor_logit_difference",
    "beats_distractors",
    "IOI_NAMES",
    "IOI_TEMPLATES",
    "GREATER_THAN_NOUNS",
    "single_token_words",
]


@dataclass
class CircuitTask:
    """Clean/corrupted prompt pairs plus the metric; see the module docstring for the fields."""

    name: str
    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    targets: dict[str, torch.Tensor]
    metric_fn: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
    attention_mask: torch.Tensor | None = None
    groups: dict[str, torch.Tensor] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if self.clean_ids.shape != self.corrupt_ids.shape or self.clean_ids.dim() != 2:
            raise ValueError(
                f"corrupt_ids: must match clean_ids [N, T], got {tuple(self.corrupt_ids.shape)} "
                f"and {tuple(self.clean_ids.shape)}"
            )
        n = len(self.clean_ids)
        for key, value in {**self.targets, **self.groups}.items():
            if len(value) != n:
                raise ValueError(f"targets/groups: {key!r} has {len(value)} rows, expected {n}")
        if self.attention_mask is not None and self.attention_mask.shape != self.clean_ids.shape:
            raise ValueError("attention_mask: must have the shape of clean_ids")

    def __len__(self) -> int:
        return len(self.clean_ids)

    def metric(self, logits: torch.Tensor, targets: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-example metric [N] of ``logits`` (default targets: the task's own)."""
        targets = self.targets if targets is None else targets
        return self.metric_fn(logits, {k: v.to(logits.device) for k, v in targets.items()})

    def subset(self, index) -> "CircuitTask":
        """The task restricted to rows ``index`` (slice, index tensor or bool mask)."""
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero(as_tuple=True)[0]
        return CircuitTask(
            name=self.name,
            clean_ids=self.clean_ids[index],
            corrupt_ids=self.corrupt_ids[index],
            targets={k: v[index] for k, v in self.targets.items()},
            metric_fn=self.metric_fn,
            attention_mask=None if self.attention_mask is None else self.attention_mask[index],
            groups={k: v[index] for k, v in self.groups.items()},
            description=self.description,
        )

    def batches(self, batch_size: int):
        """Consecutive sub-tasks of at most ``batch_size`` rows."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.subset(slice(start, start + batch_size))


# ---------------------------------------------------------------- metrics
def _gather(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """logits [N, T, V] at positions [N, K] -> [N, K, V]."""
    return logits.gather(1, positions[..., None].expand(*positions.shape, logits.shape[-1]))


def answer_logprob(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over K scored positions of log p(correct token): ``positions`` [N, K] predict ``tokens`` [N, K]."""
    scored = _gather(logits, targets["positions"]).float().log_softmax(-1)
    return scored.gather(-1, targets["tokens"][..., None]).squeeze(-1).mean(-1)


def logit_difference(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over K positions of logit(``tokens``) - logit(``wrong``) (all [N, K])."""
    scored = _gather(logits, targets["positions"]).float()
    right = scored.gather(-1, targets["tokens"][..., None]).squeeze(-1)
    wrong = scored.gather(-1, targets["wrong"][..., None]).squeeze(-1)
    return (right - wrong).mean(-1)


def probability_difference(candidates: torch.Tensor) -> Callable:
    """Greater-Than's metric: p(answer > threshold) - p(answer <= threshold) over ``candidates`` tokens.

    ``candidates`` [C] are the token ids of the values 0..C-1; ``targets["threshold"]`` [N] the start value.
    """
    candidates = candidates.clone()

    def metric(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        probs = _gather(logits, targets["positions"]).float().softmax(-1)[:, 0]  # [N, V]
        p = probs[:, candidates.to(probs.device)]  # [N, C]
        values = torch.arange(len(candidates), device=p.device)
        above = values[None, :] > targets["threshold"][:, None]
        return (p * above).sum(-1) - (p * ~above).sum(-1)

    return metric


# ---------------------------------------------------------------- addition
def addition_task(
    n: int = 64,
    *,
    seed: int = 0,
    split: str = "test",
    digits: Sequence[int] = (2, 3, 4),
    metric: str = "logprob",
    carry: Sequence[str] | None = None,
) -> CircuitTask:
    """Two-digit addition (``ab+cd=`` + five answer digits) from :mod:`spartan_core.data.addition`.

    Clean: a problem of ``split``; corrupted: the same string with the operands of another problem (whose sum
    differs), so the two runs differ only in the four operand tokens and both read the clean answer prefix.
    ``digits`` picks answer digits (0 = ten-thousands ... 4 = units; 0 and 1 are always 0, hence the default
    2, 3, 4). ``metric``: ``"logprob"`` (mean log-prob of the correct digits) or ``"logit_diff"`` (correct digit
    minus the corrupted problem's digit). ``carry`` keeps only those carry classes; ``groups["carry"]`` indexes
    ``CARRY_CLASSES``.
    """
    from ..data import addition

    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    digits = tuple(int(d) for d in digits)
    if not digits or any(not 0 <= d < addition.ANSWER_DIGITS for d in digits):
        raise ValueError(f"digits: answer digits are 0..{addition.ANSWER_DIGITS - 1}, got {digits}")
    if metric not in ("logprob", "logit_diff"):
        raise ValueError(f"metric: expected 'logprob' or 'logit_diff', got {metric!r}")
    data = addition.addition_data(split)
    pool = torch.arange(len(data["input_ids"]))
    if carry is not None:
        unknown = set(carry) - set(addition.CARRY_CLASSES)
        if unknown:
            raise ValueError(f"carry: unknown classes {sorted(unknown)}; choose from {addition.CARRY_CLASSES}")
        wanted = torch.tensor([addition.CARRY_CLASSES.index(c) for c in carry])
        pool = pool[torch.isin(data["carry"], wanted)]
    if n > len(pool):
        raise ValueError(f"n: only {len(pool)} problems available, asked for {n}")
    generator = torch.Generator().manual_seed(seed)
    clean_rows = pool[torch.randperm(len(pool), generator=generator)[:n]]
    sums = data["a"] + data["b"]
    corrupt_rows = torch.randint(0, len(data["input_ids"]), (n,), generator=generator)
    clash = sums[corrupt_rows] == sums[clean_rows]
    while clash.any():
        corrupt_rows[clash] = torch.randint(0, len(data["input_ids"]), (int(clash.sum()),), generator=generator)
        clash = sums[corrupt_rows] == sums[clean_rows]
    clean = data["input_ids"][clean_rows]
    corrupt = clean.clone()
    corrupt[:, : addition.PROMPT_LEN] = data["input_ids"][corrupt_rows, : addition.PROMPT_LEN]
    answer_positions = torch.tensor([addition.PROMPT_LEN + d for d in digits])
    positions = (answer_positions - 1).expand(n, -1).clone()
    tokens = clean[:, answer_positions]
    targets = {"positions": positions, "tokens": tokens}
    if metric == "logit_diff":
        targets["wrong"] = data["input_ids"][corrupt_rows][:, answer_positions]
    return CircuitTask(
        name="addition",
        clean_ids=clean,
        corrupt_ids=corrupt,
        targets=targets,
        metric_fn=answer_logprob if metric == "logprob" else logit_difference,
        groups={"carry": data["carry"][clean_rows], "a": data["a"][clean_rows], "b": data["b"][clean_rows]},
        description=f"two-digit addition, answer digits {digits}, metric {metric}",
    )


# ---------------------------------------------------------------- induction
def induction_task(
    vocab_size: int,
    n: int = 32,
    *,
    half: int = 8,
    seed: int = 0,
    low: int = 0,
    prefix: Sequence[int] = (),
) -> CircuitTask:
    """Repeated random tokens ``prefix + x + x``; corrupted ``prefix + y + x`` (the second half is no repeat).

    Tokens are drawn from ``[low, vocab_size)`` (:func:`spartan_core.data.induction.distinct_random_tokens`), all
    ``2 * half`` of a row distinct, so the only way to predict the second half is to copy from the first.
    Metric: mean log-prob of the correct next token over the second half.
    """
    from ..data.induction import distinct_random_tokens

    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if half < 2:
        raise ValueError(f"half: must be >= 2, got {half}")
    draws = distinct_random_tokens(n, 2 * half, vocab_size, seed=seed, low=low)
    x, y = draws[:, :half], draws[:, half:]
    head = torch.tensor(list(prefix), dtype=torch.long).expand(n, -1)
    clean = torch.cat([head, x, x], dim=1)
    corrupt = torch.cat([head, y, x], dim=1)
    start = len(prefix) + half
    positions = torch.arange(start, start + half - 1).expand(n, -1).clone()
    return CircuitTask(
        name="induction",
        clean_ids=clean,
        corrupt_ids=corrupt,
        targets={"positions": positions, "tokens": clean[:, start + 1:]},
        metric_fn=answer_logprob,
        description=f"induction on {half} repeated random tokens",
    )


# ---------------------------------------------------------------- GPT-2 BPE tasks
IOI_NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Paul", "Anna", "Kate", "Lisa", "Mark",
    "Mike", "David", "Sarah", "Emma", "Jack", "Alex", "Ben", "Sam", "Rachel", "Laura", "Steve", "Chris",
    "Peter", "George", "Michael", "Robert", "Richard", "Joseph", "Thomas", "Daniel", "Matthew", "Andrew",
    "Joshua", "Kevin", "Brian", "Jason", "Ryan", "Jacob", "Eric", "Adam", "Henry", "Jerry", "Frank", "Scott",
    "Linda", "Susan", "Jessica", "Karen", "Nancy", "Betty", "Helen", "Sandra", "Donna", "Carol", "Ruth",
)
IOI_PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
IOI_OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")
# {A} and {B} are the two names of the first clause, {S} the repeated subject; IO is the other one.
IOI_TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
)
GREATER_THAN_NOUNS = (
    "war", "expedition", "siege", "campaign", "dynasty", "reign", "pilgrimage", "drought", "famine", "empire",
    "occupation", "rebellion", "revolution", "crusade", "journey", "voyage", "conflict", "struggle",
)


def _gpt2_encoding():
    from ..data.tokenizers import gpt2_encoding

    return gpt2_encoding()


def single_token_words(words: Sequence[str], encoding=None, leading_space: bool = True) -> list[str]:
    """The words of ``words`` that GPT-2's BPE encodes as exactly one token (with a leading space by default)."""
    encoding = _gpt2_encoding() if encoding is None else encoding
    prefix = " " if leading_space else ""
    return [w for w in words if len(encoding.encode(prefix + w)) == 1]


def _picker(seed: int) -> Callable:
    """``pick(options, count=1)``: ``count`` distinct items of ``options``, one seeded stream per task."""
    generator = torch.Generator().manual_seed(seed)

    def pick(options, count=1):
        return [options[int(i)] for i in torch.randperm(len(options), generator=generator)[:count]]

    return pick


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to [N, T] and return (ids, attention mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def ioi_task(n: int = 32, *, seed: int = 0, encoding=None) -> CircuitTask:
    """Indirect-object identification on GPT-2's BPE (Wang et al. 2023).

    Clean: a template with names IO and S, S repeated (``When Mary and John went to the store, John gave a
    drink to`` -> `` Mary``; ABBA and BABA orders alternate). Corrupted: the same template with three fresh
    distinct names (the "ABC" distribution), so no name is repeated. Metric: logit(IO) - logit(S) at the last
    token. Every name is a single token (checked); prompts are right-padded with ``<|endoftext|>``.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    encoding = _gpt2_encoding() if encoding is None else encoding
    names = single_token_words(IOI_NAMES, encoding)
    if len(names) < 6:
        raise ValueError("encoding: fewer than six single-token names")
    pick = _picker(seed)
    clean_rows, corrupt_rows, positions, io_ids, s_ids, orders = [], [], [], [], [], []
    for i in range(n):
        template = pick(IOI_TEMPLATES)[0]
        place, obj = pick(IOI_PLACES)[0], pick(IOI_OBJECTS)[0]
        io, s, c1, c2, c3 = pick(names, 5)
        a, b = (io, s) if i % 2 == 0 else (s, io)
        fill = dict(PLACE=place, OBJECT=obj)
        clean = encoding.encode(template.format(A=a, B=b, S=s, **fill))
        corrupt = encoding.encode(template.format(A=c1, B=c2, S=c3, **fill))
        if len(clean) != len(corrupt):
            raise RuntimeError(f"ioi: clean and corrupted prompts tokenise to different lengths: {template!r}")
        clean_rows.append(clean)
        corrupt_rows.append(corrupt)
        positions.append([len(clean) - 1])
        io_ids.append([encoding.encode(" " + io)[0]])
        s_ids.append([encoding.encode(" " + s)[0]])
        orders.append(i % 2)
    pad = encoding.eot_token
    clean_ids, mask = _pad(clean_rows, pad)
    corrupt_ids, _ = _pad(corrupt_rows, pad)
    return CircuitTask(
        name="ioi",
        clean_ids=clean_ids,
        corrupt_ids=corrupt_ids,
        targets={"positions": torch.tensor(positions), "tokens": torch.tensor(io_ids), "wrong": torch.tensor(s_ids)},
        metric_fn=logit_difference,
        attention_mask=mask,
        groups={"baba": torch.tensor(orders)},
        description="IOI (ABBA/BABA templates), corrupted = ABC names, metric logit(IO) - logit(S)",
    )


def greater_than_task(n: int = 32, *, seed: int = 0, encoding=None) -> CircuitTask:
    """Greater-Than on GPT-2's BPE (Hanna et al. 2023): ``The war lasted from the year 1732 to the year 17``.

    Centuries 11-17, start years YY in 02..98 chosen so that `` XXYY`` tokenises as `` XX`` + ``YY``.
    Corrupted: the same prompt with YY = 01. Metric: probability of the two-digit continuations greater than YY
    minus those less than or equal to it (over the 100 tokens ``00``..``99``, all single tokens, checked).
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    encoding = _gpt2_encoding() if encoding is None else encoding
    two_digit = [encoding.encode(f"{y:02d}") for y in range(100)]
    if any(len(t) != 1 for t in two_digit):
        raise ValueError("encoding: the two-digit numbers 00..99 are not all single tokens")
    candidates = torch.tensor([t[0] for t in two_digit])
    options = []
    for century in range(11, 18):
        century_token = encoding.encode(f" {century}")
        if len(century_token) != 1:
            continue
        for year in range(2, 99):
            if encoding.encode(f" {century}{year:02d}") == century_token + [int(candidates[year])] and \
                    encoding.encode(f" {century}01") == century_token + [int(candidates[1])]:
                options.append((century, year))
    nouns = single_token_words(GREATER_THAN_NOUNS, encoding)
    generator = torch.Generator().manual_seed(seed)
    clean_rows, corrupt_rows, positions, thresholds = [], [], [], []
    for _ in range(n):
        century, year = options[int(torch.randint(len(options), (1,), generator=generator))]
        noun = nouns[int(torch.randint(len(nouns), (1,), generator=generator))]
        text = "The {noun} lasted from the year {c}{y:02d} to the year {c}"
        clean = encoding.encode(text.format(noun=noun, c=century, y=year))
        corrupt = encoding.encode(text.format(noun=noun, c=century, y=1))
        clean_rows.append(clean)
        corrupt_rows.append(corrupt)
        positions.append([len(clean) - 1])
        thresholds.append(year)
    pad = encoding.eot_token
    clean_ids, mask = _pad(clean_rows, pad)
    corrupt_ids, _ = _pad(corrupt_rows, pad)
    return CircuitTask(
        name="greater_than",
        clean_ids=clean_ids,
        corrupt_ids=corrupt_ids,
        targets={"positions": torch.tensor(positions), "threshold": torch.tensor(thresholds)},
        metric_fn=probability_difference(candidates),
        attention_mask=mask,
        groups={"year": torch.tensor(thresholds)},
        description="Greater-Than, corrupted start year YY=01, metric p(>YY) - p(<=YY)",
    )


# ---------------------------------------------------------------- Docstring (code models)
DOCSTRING_TEMPLATE = 'def {function}(self, {a}, {b}, {c}):\n    """{summary}\n\n    :param {a}: {first}\n    :param {b}: {second}\n    :param'
DOCSTRING_SUMMARIES = ("Return the result.", "Update the state.", "Check the input.", "Build the object.",
                       "Read the data.", "Write the value.")
DOCSTRING_DESCRIPTIONS = ("the value", "the name", "the size", "a flag", "the object", "the data", "the path",
                          "the number")


def single_token_names(tokenizer, names: Sequence[str]) -> list[str]:
    """The names of ``names`` that ``tokenizer`` encodes as one token with a leading space, in their order."""
    encoded = tokenizer([" " + n for n in names], add_special_tokens=False)["input_ids"]
    return [n for n, ids in zip(names, encoded) if len(ids) == 1]


def distractor_logit_difference(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """logit(``tokens``) minus the mean logit of the ``wrong`` candidates [N, K], at the one scored position."""
    scored = _gather(logits, targets["positions"]).float()[:, 0]  # [N, V]
    right = scored.gather(-1, targets["tokens"]).squeeze(-1)
    return right - scored.gather(-1, targets["wrong"]).mean(-1)


def beats_distractors(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Bool [N]: the right token's logit is above every distractor's (the Docstring task's accuracy)."""
    scored = _gather(logits, targets["positions"]).float()[:, 0]
    return scored.gather(-1, targets["tokens"]).squeeze(-1) > scored.gather(-1, targets["wrong"]).amax(-1)


@torch.no_grad()
def clean_performance(model, task: CircuitTask) -> tuple[float, float]:
    """(accuracy against the distractors, mean metric) of ``model`` on ``task``'s clean prompts: whether the model
    does a task with distractors well enough for its circuit to mean anything."""
    device = next(model.parameters()).device
    mask = None if task.attention_mask is None else task.attention_mask.to(device)
    logits = model(input_ids=task.clean_ids.to(device), attention_mask=mask).logits.float().cpu()
    return float(beats_distractors(logits, task.targets).float().mean()), float(task.metric(logits).mean())


def docstring_task(tokenizer, argument_names: Sequence[str], function_names: Sequence[str], n: int = 32, *,
                   seed: int = 0) -> CircuitTask:
    """The Docstring task (Heimersheim & Janiak 2023) on a code model's tokenizer.

    Clean: ``def f(self, a, b, c):`` then a docstring documenting ``:param a:`` and ``:param b:`` and ending at
    ``:param``; the answer is `` c``, the distractors `` a`` and `` b`` (chance accuracy 1/3). Corrupted: the same
    prompt with three other argument names everywhere, so only the argument names differ and the answer is absent.
    Metric: logit(c) - mean logit(a, b). Argument names must be single tokens (with a leading space) for the pairs to
    align; function names may be several and differ in length between prompts (right padding, shared mask).
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    names = single_token_names(tokenizer, sorted(set(argument_names)))
    if len(names) < 6:
        raise ValueError(f"argument_names: {len(names)} are single tokens of this tokenizer, the task needs six")
    functions = sorted(set(function_names))
    if not functions:
        raise ValueError("function_names: empty")
    pick = _picker(seed)
    clean_rows, corrupt_rows, positions, right, wrong = [], [], [], [], []
    for _ in range(n):
        a, b, c, *other = pick(names, 6)
        fill = dict(function=pick(functions, 1)[0], summary=pick(DOCSTRING_SUMMARIES, 1)[0],
                    first=pick(DOCSTRING_DESCRIPTIONS, 1)[0], second=pick(DOCSTRING_DESCRIPTIONS, 1)[0])
        clean = tokenizer(DOCSTRING_TEMPLATE.format(a=a, b=b, c=c, **fill), add_special_tokens=False)["input_ids"]
        corrupt = tokenizer(DOCSTRING_TEMPLATE.format(a=other[0], b=other[1], c=other[2], **fill),
                            add_special_tokens=False)["input_ids"]
        if len(clean) != len(corrupt):
            raise RuntimeError(f"docstring: clean and corrupted prompts tokenise to different lengths ({fill})")
        clean_rows.append(clean)
        corrupt_rows.append(corrupt)
        positions.append([len(clean) - 1])
        ids = tokenizer([" " + c, " " + a, " " + b], add_special_tokens=False)["input_ids"]
        right.append(ids[0])
        wrong.append([ids[1][0], ids[2][0]])
    pad = tokenizer.eos_token_id
    clean_ids, mask = _pad(clean_rows, pad)
    corrupt_ids, _ = _pad(corrupt_rows, pad)
    return CircuitTask(
        name="docstring",
        clean_ids=clean_ids,
        corrupt_ids=corrupt_ids,
        targets={"positions": torch.tensor(positions), "tokens": torch.tensor(right), "wrong": torch.tensor(wrong)},
        metric_fn=distractor_logit_difference,
        attention_mask=mask,
        description="Docstring (def f(self, a, b, c) ... :param a ... :param b ... :param -> c), corrupted = "
                    "three other argument names, metric logit(c) - mean logit(a, b)",
    )
