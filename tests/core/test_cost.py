"""Cost model: Zeus's eq. 2 worked by hand."""

import pytest

from kwatt_core.cost import CostModel, CostModelError


def test_cost_mixes_energy_and_time_in_joules() -> None:
    model = CostModel(eta=0.5, max_power_w=250.0)
    # 0.5 * 1000 J + 0.5 * 250 W * 10 s = 500 + 1250
    assert model.cost(1000.0, 10.0) == pytest.approx(1750.0)


def test_eta_extremes_are_energy_only_and_time_only() -> None:
    assert CostModel(1.0, 300.0).cost(42.0, 7.0) == pytest.approx(42.0)
    assert CostModel(0.0, 300.0).cost(42.0, 7.0) == pytest.approx(2100.0)


def test_max_power_counts_every_gpu() -> None:
    # Four GPUs with a 700 W top limit: MaxPower is 2800 W, not 700 W.
    model = CostModel.for_gpus(eta=0.0, max_limit_w=700.0, gpu_count=4)
    assert model.cost(0.0, 1.0) == pytest.approx(2800.0)


def test_energy_weight_scales_only_the_energy_term() -> None:
    model = CostModel(0.5, 200.0).with_weight(2.0)
    assert model.cost(100.0, 1.0) == pytest.approx(0.5 * 2.0 * 100.0 + 0.5 * 200.0)


@pytest.mark.parametrize(
    ("eta", "power", "weight"),
    [(-0.1, 250.0, 1.0), (1.5, 250.0, 1.0), (0.5, 0.0, 1.0), (0.5, 250.0, -1.0)],
)
def test_bad_parameters_are_refused_with_a_sentence(
    eta: float, power: float, weight: float
) -> None:
    with pytest.raises(CostModelError, match="must"):
        CostModel(eta, power, weight)


def test_gpu_count_must_be_positive() -> None:
    with pytest.raises(CostModelError, match="gpu_count"):
        CostModel.for_gpus(0.5, 250.0, 0)


def test_a_weight_of_zero_makes_energy_free() -> None:
    """A carbon-free hour (weight 0) is allowed: only time costs then."""
    assert CostModel(0.5, 200.0, 0.0).cost(1e6, 2.0) == pytest.approx(0.5 * 200.0 * 2.0)


def test_one_gpu_and_any_positive_max_power_are_fine() -> None:
    assert CostModel.for_gpus(0.0, 250.0, 1).cost(0.0, 1.0) == pytest.approx(250.0)
    assert CostModel(0.0, 0.5).cost(0.0, 2.0) == pytest.approx(1.0)
