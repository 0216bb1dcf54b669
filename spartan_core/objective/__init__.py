"""The objective: minimise kept edges subject to CE <= tau. ``geco`` is the multiplier, ``tau`` the one rule
that sets the target, ``sparsity`` the loss a training step minimises."""
