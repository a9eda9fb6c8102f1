"""Early stop: stop right before the epoch that would pass the threshold."""

from kwatt_core.early_stop import should_stop


def test_no_threshold_never_stops() -> None:
    assert not should_stop(1e12, 1e9, None)


def test_first_epoch_always_runs() -> None:
    assert not should_stop(0.0, None, 10.0)


def test_stops_when_next_epoch_would_cross() -> None:
    # 3 epochs of 30 cost 90; a 4th would make 120 > 100.
    assert should_stop(90.0, 30.0, 100.0)
    # 2 epochs cost 60; a 3rd makes exactly 90 <= 100: go on.
    assert not should_stop(60.0, 30.0, 100.0)
    # Landing exactly on the threshold is allowed.
    assert not should_stop(70.0, 30.0, 100.0)
