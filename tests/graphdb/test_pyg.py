"""Importing PyG through graphdb.pyg (as the model does) emits no FutureWarning about
``torch.jit.script`` (issue 13: every model load printed it) and leaves the warning filters as
they were."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

PROBE = r"""
import warnings
import torch
before = list(warnings.filters)
import encoders.graph, graphdb.provider   # the model's imports of PyG
assert list(warnings.filters) == before, "graphdb.pyg changed the global warning filters"
import torch_geometric
assert torch_geometric.nn.RGCNConv is encoders.graph.RGCNConv
"""


def test_pyg_import_emits_no_future_warning_and_keeps_the_filters():
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", PROBE], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FutureWarning" not in proc.stderr


@pytest.mark.slow
def test_the_probe_can_fail():
    """Without graphdb.pyg's guard the same import raises: the test above checks something real."""
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", "import torch_geometric"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "torch.jit.script` is deprecated" in proc.stderr
