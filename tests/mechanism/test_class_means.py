"""spartan_core.mechanism.class_means: attention averaged per class, streamed over batches of maps."""

import pytest
import torch

from spartan_core.mechanism.class_means import class_means_of


def test_class_means_pool_batches_like_one_average():
    maps = torch.rand(6, 1, 2, 3, 3) * (torch.rand(6, 1, 2, 3, 3) > 0.5)
    classes = torch.tensor([0, 2, 0, 2, 2, 0])
    means = class_means_of([(maps[:4], classes[:4]), (maps[4:], classes[4:])], n_classes=3)
    assert means.count.tolist() == [3, 0, 3]
    assert torch.allclose(means.weight[2], maps[classes == 2].double().mean(0))
    assert torch.allclose(means.kept[0], (maps[classes == 0] > 0).double().mean(0))
    assert torch.allclose(means.overall("kept"), (maps > 0).double().mean(0))
    assert torch.isnan(means.pooled([1])).all()
    with pytest.raises(ValueError, match="classes"):
        class_means_of([(maps, classes[:5])], n_classes=3)
    with pytest.raises(ValueError, match="batches"):
        class_means_of([], n_classes=3)
