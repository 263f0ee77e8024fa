"""Process-level defaults of an entry point (``r2genkg``, scripts/run_batch.py): offline hub
switches and the log format. Called by entry points, never at import. (PyG's torch.jit warning is
silenced where PyG is imported, in graphdb/pyg.py, not process-wide.)"""
from __future__ import annotations

import logging
import os

OFFLINE_VARS = {
    # Without these a stray hub lookup retries for ~45 s before failing.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def use_offline_defaults() -> None:
    """Set the hub's offline switches unless the user set them already."""
    for key, value in OFFLINE_VARS.items():
        os.environ.setdefault(key, value)


def use_process_defaults() -> None:
    """Everything an entry point sets up before it runs its command."""
    use_offline_defaults()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
