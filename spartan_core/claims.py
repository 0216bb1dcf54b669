"""A chapter's answer to one claim of the paper. The study that measures a claim also states its rule and judges
it, beside the numbers the rule reads; the companion's ledger only collects what the chapters recorded. A rule
must be able to say "not reproduced": a verdict is one of :data:`VERDICTS`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Claim", "VERDICTS"]

VERDICTS = ("reproduced", "partly", "not reproduced", "cannot test here")


@dataclass(frozen=True)
class Claim:
    """One chapter's measurement of claim ``id`` (an id of the book's claims list): the ``sentence`` the ledger
    shows, the ``values`` it rests on (JSON-ready), and the ``verdict`` of the stated ``rule``. A chapter that
    adds evidence to a claim another chapter judges records its sentence and values with no verdict and no rule."""

    id: str
    sentence: str
    values: dict = field(default_factory=dict)
    verdict: str | None = None
    rule: str | None = None
    headline: str = ""  # the few numbers the front page's ledger shows for a judged claim (spreads without counts)

    def __post_init__(self):
        if not self.id or not self.sentence:
            raise ValueError("id: a claim needs an id and a sentence")
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(f"verdict: must be one of {', '.join(VERDICTS)} or None, got {self.verdict!r}")
        if (self.verdict is None) != (self.rule is None):
            raise ValueError("rule: a verdict needs the rule that gave it, and a rule a verdict")
        if self.verdict is not None and not self.headline:
            raise ValueError("headline: a judged claim needs the numbers the front page shows for it")
        reserved = {"summary", "verdict", "rule", "headline"} & set(self.values)
        if reserved:
            raise ValueError(f"values: {sorted(reserved)[0]!r} is a field of the claim itself")

    def to_record(self) -> dict:
        """What the results file keeps: the sentence as ``summary``, the verdict and rule, then the values."""
        judged = ({} if self.verdict is None else
                  {"verdict": self.verdict, "rule": self.rule, "headline": self.headline})
        return {"summary": self.sentence, **judged, **self.values}
