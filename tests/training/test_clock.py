"""training.clock: the whole run's elapsed time and ETA after each epoch (issue 13: training
showed per-epoch bars only), resumed runs timed on their own epochs."""
from __future__ import annotations

import pytest

from training.clock import RunClock, hms


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (65, "1:05"), (59.6, "1:00"), (3725.2, "1:02:05")])
def test_hms(seconds, text):
    assert hms(seconds) == text


def test_eta_is_the_mean_epoch_times_the_epochs_left():
    clock = RunClock(10, started=100.0)
    assert clock.after_epoch(2, now=160.0) == "run: epoch 2/10 done, 1:00 elapsed, about 4:00 to go (8 epochs left)"
    assert clock.after_epoch(9, now=370.0) == "run: epoch 9/10 done, 4:30 elapsed, about 0:30 to go (1 epoch left)"
    assert clock.after_epoch(10, now=400.0) == "run: epoch 10/10 done, 5:00 elapsed"


def test_a_resumed_run_counts_only_its_own_epochs():
    clock = RunClock(10, first_epoch=6, started=0.0)
    assert clock.after_epoch(7, now=50.0).endswith("about 2:30 to go (3 epochs left)")


def test_an_early_stop_says_so_instead_of_an_eta():
    assert RunClock(10, started=0.0).after_epoch(4, "early_stop", now=80.0) == \
        "run: epoch 4/10 done, 1:20 elapsed, stopping (early_stop)"
