"""A refused intensity answer names the service that gave it (kwatt_core.carbon): an admin
reading the sidecar's log must know which of the configured sources to look at."""

from __future__ import annotations

import pytest

from kwatt_core import carbon
from kwatt_core.carbon import CarbonError


def test_a_watttime_answer_it_cannot_use_names_watttime() -> None:
    percentile = {
        "data": [{"point_time": "2026-03-01T12:00:00Z", "value": 55}],
        "meta": {"signal_type": "co2_moer", "units": "percentile"},
    }
    with pytest.raises(CarbonError, match=r"^WattTime answered values in 'percentile'"):
        carbon.parse_watttime(percentile, 1_772_366_400.0)
