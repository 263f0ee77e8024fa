"""scripts/gpu_check.py runs end to end at the debug sizes on CPU (--tiny), so the GPU run is not
its first run; the real check needs CUDA and is run by hand when a GPU is lent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_runs_on_cpu(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--tiny", "--steps", "2",
                           "--batch", "2", "--beams", "2", "--workdir", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False, env={"CUDA_VISIBLE_DEVICES": "",
                                                                              "PATH": "/usr/bin:/bin",
                                                                              "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["train_samples_per_s"] > 0
    assert figures["generate_samples_per_s"] > 0 and figures["peak_memory_gib"] is None
