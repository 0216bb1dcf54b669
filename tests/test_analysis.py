"""spartan_core.analysis: edge/loss rows (the attention functions moved to spartan_core.studies, tested there)."""

import numpy as np
import pytest

from spartan_core import analysis


def test_edges_and_loss_pending_for_an_unreachable_hub_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row = analysis.edges_and_loss("spartan-test-org/no-such-model", post_train=False)
    assert row["status"] == "pending" and "HF_HUB_OFFLINE" in row["reason"]
    assert "dense_ce" not in row


def test_edges_and_loss_untrained_gate_on_a_toy():
    row = analysis.edges_and_loss("addition-4l", post_train=False, dense_overrides={"steps": 30}, eval_blocks=500,
                                  batch_size=500)
    assert row["status"] == "measured" and row["heldout"] == "test (500 of 2000 rows)" and row["context_length"] == 11
    assert row["dense_ce"] > 0 and row["gated_ce"] > 0
    assert 0 < row["gated_kept_fraction"] < 1
    assert np.array(row["gated_per_head"]).shape == (4, 4)
    assert row["gated_ce_increase_pct"] == pytest.approx(100 * (row["gated_ce"] / row["dense_ce"] - 1))
