"""The mechanism: a binary gate on every attention edge (``gate``), its plug into transformers' attention
registry (``sparsify``), and counting the edges it keeps (``token_edges``)."""
