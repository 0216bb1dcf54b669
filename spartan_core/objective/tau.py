"""The one rule that sets tau, the CE the sparse model must stay under.

The trap it guards against: GECO compares the *training CE under sampled masks* with tau, and that CE has a
floor well above the dense model's deterministic CE (on the addition toy ~0.003-0.02 nats per answer token
against ~0.001). A tau under that floor never lets beta leave its lower clamp, and nothing sparsifies. So tau is
either absolute, or a factor times a measured reference — the dense model's training CE (``"dense"``) or the
sampled-mask CE measured after a phase with beta at its minimum (``"floor"``) — and never below ``tau_min``.
The book's method notes show the trap on the toy.
"""

from __future__ import annotations

import math

__all__ = ["TAU_REFERENCES", "resolve_tau"]

TAU_REFERENCES = ("dense", "floor")


def resolve_tau(*, tau: float | None, tau_factor: float, tau_reference: str, tau_min: float,
                dense_ce: float, floor_ce: float | None) -> float:
    """tau itself when given; else ``max(tau_factor x reference, tau_min)``."""
    if tau is not None:
        return tau
    if tau_reference not in TAU_REFERENCES:
        raise ValueError(f"tau_reference: must be one of {', '.join(TAU_REFERENCES)}, got {tau_reference!r}")
    reference = dense_ce if tau_reference == "dense" else floor_ce
    if reference is None or not math.isfinite(reference):
        raise ValueError(f"tau_reference: the {tau_reference} CE was not measured (got {reference!r})")
    return max(tau_factor * reference, tau_min)
