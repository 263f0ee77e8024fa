"""The whole run's clock: after each epoch, the wall time so far and an ETA for the epochs left.

Per-epoch bars (tqdm) say how far the current epoch is; this says how far the run is. The rate is
the epochs this process ran (training + validation + saves) over their wall time, so a resumed run
does not count the epochs an earlier process did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


def hms(seconds: float) -> str:
    """3725.2 → '1:02:05'; 65 → '1:05'."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class RunClock:
    total_epochs: int
    first_epoch: int = 0           # epochs already done when this process started (resume)
    started: float = field(default_factory=time.perf_counter)

    def after_epoch(self, epochs_done: int, stopped: str = "", now: float | None = None) -> str:
        """The line to print once ``epochs_done`` epochs are done (``stopped``: why the run ends early)."""
        elapsed = (time.perf_counter() if now is None else now) - self.started
        line = f"run: epoch {epochs_done}/{self.total_epochs} done, {hms(elapsed)} elapsed"
        left = self.total_epochs - epochs_done
        if stopped or left <= 0:
            return line + (f", stopping ({stopped})" if stopped else "")
        per_epoch = elapsed / max(epochs_done - self.first_epoch, 1)
        return line + f", about {hms(per_epoch * left)} to go ({left} epoch{'s' if left > 1 else ''} left)"
