"""GECO (Rezende & Viola 2018): a Lagrange multiplier that keeps the LM loss at a target while edges are removed.

The problem is: minimise the expected fraction of kept edges subject to CE <= tau. The training loss is
``CE + beta * sparsity`` and beta follows the constraint slack, in log space, from an EMA of the CE:

    ce_ema   <- alpha * ce_ema + (1 - alpha) * ce
    log beta <- clamp(log beta + eta * (tau - ce_ema), log beta_min, log beta_max)

so beta grows while the constraint holds (there is room to remove edges) and shrinks when it is violated. With
``eta = 0`` beta stays at ``beta_init``: a fixed penalty, the baseline GECO is compared against.

GECO is an integral controller on the filtered slack xi = tau - ce_ema. :class:`PIGECO` adds the proportional term
of nuPI (Sohrabi et al. 2024, PI control of Lagrange multipliers) in its incremental form,

    log beta <- clamp(log beta + eta * xi_t + kp * (xi_t - xi_{t-1}), ...)

so that beta drops as soon as the CE turns towards tau rather than only after the integral has unwound; the clamp
bounds the state (no wind-up). ``kp = 0`` is GECO exactly, so a comparison isolates the proportional term. We keep
this by hand instead of using cooper-optim's nuPI optimiser: cooper updates a tensor multiplier through a dual
optimiser wrapped around the primal one, which the one training loop deliberately does not own, and the law is
two lines on a float in log space.
"""

from __future__ import annotations

import math

__all__ = ["GECO", "PIGECO", "CONTROLLERS"]

CONTROLLERS = ("geco", "fixed", "pi")  # the multiplier rules a recipe may name


class GECO:
    def __init__(
        self,
        tau: float,
        alpha: float = 0.99,
        eta: float = 1.0,
        beta_init: float = math.exp(-8),
        beta_min: float = math.exp(-10),
        beta_max: float = math.exp(5),
    ):
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: must be a positive finite loss value, got {tau!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha: must be in [0, 1), got {alpha!r}")
        if eta < 0:
            raise ValueError(f"eta: must be >= 0, got {eta!r}")
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"beta_min/beta_max: need 0 < beta_min <= beta_max, got {beta_min!r}, {beta_max!r}")
        if not beta_min <= beta_init <= beta_max:
            raise ValueError(f"beta_init: must lie in [beta_min, beta_max], got {beta_init!r}")
        self.tau = float(tau)
        self.alpha = float(alpha)
        self.eta = float(eta)
        self.log_beta_min = math.log(beta_min)
        self.log_beta_max = math.log(beta_max)
        self.log_beta = math.log(beta_init)
        self.ce_ema: float | None = None
        self.steps = 0

    @property
    def beta(self) -> float:
        return math.exp(self.log_beta)

    def update(self, ce: float) -> float:
        """Fold one training CE into the EMA, move beta, and return the new beta (use it for the next step)."""
        ce = float(ce)
        if not math.isfinite(ce):
            raise ValueError(f"ce: GECO received a non-finite loss {ce!r}")
        self.ce_ema = ce if self.ce_ema is None else self.alpha * self.ce_ema + (1 - self.alpha) * ce
        self.log_beta = min(max(self.log_beta + self._step(self.tau - self.ce_ema), self.log_beta_min),
                            self.log_beta_max)
        self.steps += 1
        return self.beta

    def _step(self, slack: float) -> float:
        """The change of log beta for the filtered slack tau - ce_ema (integral control)."""
        return self.eta * slack

    def log_fields(self) -> dict:
        return {"tau": self.tau, "ce_ema": self.ce_ema, "beta": self.beta, "log_beta": self.log_beta}

    def state_dict(self) -> dict:
        return {
            "tau": self.tau, "alpha": self.alpha, "eta": self.eta, "log_beta": self.log_beta,
            "log_beta_min": self.log_beta_min, "log_beta_max": self.log_beta_max,
            "ce_ema": self.ce_ema, "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("tau", "alpha", "eta", "log_beta", "log_beta_min", "log_beta_max", "ce_ema", "steps"):
            setattr(self, key, state[key])

    def __repr__(self) -> str:
        return f"GECO(tau={self.tau:.4g}, beta={self.beta:.3g}, ce_ema={self.ce_ema}, eta={self.eta})"


class PIGECO(GECO):
    """GECO with a proportional term on the change of the filtered slack (nuPI); ``kp`` >= 0 in log beta per nat."""

    def __init__(self, tau: float, kp: float, **geco):
        super().__init__(tau, **geco)
        if not (isinstance(kp, (int, float)) and math.isfinite(kp) and kp >= 0):
            raise ValueError(f"kp: must be a finite number >= 0, got {kp!r}")
        self.kp = float(kp)
        self.slack: float | None = None  # xi_{t-1}

    def _step(self, slack: float) -> float:
        change = 0.0 if self.slack is None else slack - self.slack
        self.slack = slack
        return self.eta * slack + self.kp * change

    def log_fields(self) -> dict:
        return {**super().log_fields(), "slack": self.slack}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kp": self.kp, "slack": self.slack}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.kp, self.slack = state["kp"], state["slack"]

    def __repr__(self) -> str:
        return f"PIGECO(tau={self.tau:.4g}, beta={self.beta:.3g}, eta={self.eta}, kp={self.kp})"
