"""When a run should stop before reaching its target.

Zeus stops a run right before the epoch that would carry its cost past the
threshold (`beta` times the lowest cost seen), so a stopped run never costs more
than the threshold once its epoch cost is known. The sidecar checks at each
epoch end; the first epoch always runs, since its cost is unknown until then.
"""

from __future__ import annotations


def should_stop(cost_so_far: float, last_epoch_cost: float | None, threshold: float | None) -> bool:
    """True if running one more epoch like the last one would pass the threshold."""
    if threshold is None or last_epoch_cost is None:
        return False
    return cost_so_far + last_epoch_cost > threshold
