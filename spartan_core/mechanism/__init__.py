"""The mechanism: a binary gate on every attention edge (``gate``), its plug into transformers' attention
registry (``sparsify``), counting the edges it keeps (``token_edges``), every head's attention map as a model
computes it (``attention``) and attention averaged per class of input (``class_means``)."""
