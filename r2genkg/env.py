"""Process-level defaults for running offline. Called by entry points, never at import."""
from __future__ import annotations

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
