"""PyTorch Geometric, imported in this one place: the PyG names the project uses, re-exported.

torch_geometric 2.8's import runs ``torch.jit.script`` (nn/pool/select/base.py, connect/base.py),
which torch 2.14 deprecates with a FutureWarning on every run; nothing we can act on. Exactly that
warning is ignored, only while PyG is imported (the filters are restored after: no global state).
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                            module=r"torch\.jit\._script")
    import torch_geometric.backend
    import torch_geometric.typing
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import RGCNConv
    from torch_geometric.utils import to_dense_batch

__all__ = ["Batch", "Data", "RGCNConv", "to_dense_batch", "torch_geometric"]
