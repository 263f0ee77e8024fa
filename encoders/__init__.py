"""The model's encoders, tensors in and tensors out (no I/O, no graph store): the vision backbone
(vision.py), the 14-query disease Q-Former with its classifier (qformer.py), the R-GCN with the
multi-scale fusion (graph.py), V2KG / KG2V cross-attention and bank attention (fusion.py), and the
one strict state-dict check (state.py)."""
