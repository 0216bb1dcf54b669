import math

import pytest

from spartan_core import GECO


def test_beta_grows_while_constraint_holds_and_shrinks_when_violated():
    geco = GECO(tau=1.0, alpha=0.0, eta=2.0, beta_init=1.0)
    assert geco.update(0.5) == pytest.approx(math.exp(1.0))
    assert geco.update(1.5) == pytest.approx(1.0)  # back down by the same step
    assert geco.update(1.25) == pytest.approx(math.exp(-0.5))


def test_ema_and_clamp():
    geco = GECO(tau=1.0, alpha=0.5, eta=100.0, beta_init=1.0, beta_min=1e-3, beta_max=10.0)
    geco.update(0.0)
    assert geco.ce_ema == 0.0 and geco.beta == pytest.approx(10.0)
    geco.update(4.0)
    assert geco.ce_ema == pytest.approx(2.0)
    assert geco.beta == pytest.approx(1e-3)


def test_eta_zero_is_a_fixed_penalty():
    geco = GECO(tau=1.0, eta=0.0, beta_init=0.3)
    for ce in (0.1, 5.0, 0.2):
        assert geco.update(ce) == pytest.approx(0.3)


def test_state_round_trip():
    geco = GECO(tau=2.1, eta=0.5)
    geco.update(1.0)
    other = GECO(tau=9.0)
    other.load_state_dict(geco.state_dict())
    assert other.state_dict() == geco.state_dict()
    assert other.update(3.0) == geco.update(3.0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(tau=0.0), "tau"), (dict(tau=-1.0), "tau"), (dict(tau=float("nan")), "tau"),
    (dict(tau=1.0, alpha=1.0), "alpha"), (dict(tau=1.0, eta=-1.0), "eta"),
    (dict(tau=1.0, beta_init=1e9), "beta_init"),
])
def test_bad_values_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        GECO(**kwargs)


def test_nonfinite_ce_is_refused():
    with pytest.raises(ValueError, match="ce"):
        GECO(tau=1.0).update(float("inf"))


def test_the_one_tau_rule():
    from spartan_core.objective.tau import resolve_tau

    common = dict(tau_factor=3.0, tau_min=0.013, dense_ce=0.001, floor_ce=0.02)
    assert resolve_tau(tau=0.5, tau_reference="dense", **common) == 0.5
    assert resolve_tau(tau=None, tau_reference="dense", **common) == 0.013  # 3 x 0.001 is under the floor
    assert resolve_tau(tau=None, tau_reference="floor", **common) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="^tau_reference: the floor CE was not measured"):
        resolve_tau(tau=None, tau_reference="floor", **{**common, "floor_ce": None})


def test_pi_with_no_proportional_gain_is_geco():
    from spartan_core.objective.geco import PIGECO

    geco, pi = GECO(tau=1.0, alpha=0.5, eta=2.0, beta_init=1.0), PIGECO(tau=1.0, kp=0.0, alpha=0.5, eta=2.0, beta_init=1.0)
    for ce in (0.5, 1.5, 0.9, 2.0):
        assert pi.update(ce) == pytest.approx(geco.update(ce))


def test_pi_drops_beta_as_soon_as_the_slack_shrinks():
    from spartan_core.objective.geco import PIGECO

    pi = PIGECO(tau=1.0, kp=10.0, alpha=0.0, eta=1.0, beta_init=1.0)
    pi.update(0.5)  # slack 0.5, no change yet: log beta = 0.5
    assert pi.log_beta == pytest.approx(0.5)
    pi.update(0.8)  # slack 0.2 (still met): + 0.2 from the integral, - 3.0 from the proportional term
    assert pi.log_beta == pytest.approx(0.5 + 0.2 - 3.0)


def test_pi_state_round_trips_for_resume():
    from spartan_core.objective.geco import PIGECO

    pi = PIGECO(tau=2.0, kp=3.0, eta=0.5)
    for ce in (1.0, 2.5, 1.7):
        pi.update(ce)
    other = PIGECO(tau=9.0, kp=0.0)
    other.load_state_dict(pi.state_dict())
    assert other.state_dict() == pi.state_dict()
    assert [other.update(c) for c in (2.2, 1.1)] == [pi.update(c) for c in (2.2, 1.1)]


def test_bad_proportional_gain_is_refused_by_name():
    from spartan_core.objective.geco import PIGECO

    with pytest.raises(ValueError, match="^kp"):
        PIGECO(tau=1.0, kp=-1.0)
