"""WebShop's data splits: WebShop's ranges for its full goal set, disjoint proportional splits for small data."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from hiergym.envs.webshop.catalog import WebShopDataCatalog
from hiergym.envs.webshop.goals import WebShopDataGoals, data_split_bounds

FIXTURE = Path(__file__).parent / "fixtures" / "webshop"


def _catalog(num_goals: int) -> SimpleNamespace:
    """A stand-in catalog with one human instruction per product."""
    products = [SimpleNamespace(asin=f"B{i:09d}", category="beauty", query="soap", title=f"soap {i}",
                                product_category="Beauty", price=9.0,
                                extra={"name": f"soap {i}", "instructions": [
                                    {"instruction": f"soap number {i}", "instruction_attributes": ["mild"],
                                     "instruction_options": []}]})
                for i in range(num_goals)]
    return SimpleNamespace(products=products)


def _check_partition(goals: WebShopDataGoals, n: int) -> None:
    sets = {split: set(ids) for split, ids in goals.splits.items()}
    assert all(sets.values()), "no split may be empty"
    assert not (sets["train"] & sets["eval_in"]) and not (sets["train"] & sets["eval_out"])
    assert not (sets["eval_in"] & sets["eval_out"])
    assert set().union(*sets.values()) == set(range(n))


def test_small_webshop_data_splits_are_disjoint() -> None:
    with pytest.warns(UserWarning, match="4 goals, fewer than WebShop's ranges"):
        goals = WebShopDataGoals(WebShopDataCatalog(FIXTURE), human_goals=True)
    _check_partition(goals, 4)
    assert goals.splits == {"eval_in": [0], "eval_out": [1], "train": [2, 3]}
    with pytest.warns(UserWarning, match="17 goals"):
        synthetic = WebShopDataGoals(WebShopDataCatalog(FIXTURE, human_goals=False), human_goals=False)
    _check_partition(synthetic, 17)


@pytest.mark.parametrize("n", [3, 10, 57, 499, 500, 501, 502, 503, 900, 1500])
def test_proportional_splits_for_every_small_size(n: int) -> None:
    with pytest.warns(UserWarning, match="fewer than WebShop's ranges"):
        goals = WebShopDataGoals(_catalog(n))  # type: ignore[arg-type]
    _check_partition(goals, n)
    a, b = data_split_bounds(n)
    if n >= 502:  # WebShop's test set, goal ids 0-499, stays eval_in
        assert goals.splits["eval_in"] == list(range(500))
        assert abs(len(goals.splits["eval_out"]) - len(goals.splits["train"])) <= 1
    else:
        assert len(goals.splits["eval_in"]) == len(goals.splits["eval_out"]) == max(1, n // 10)


def test_webshop_ranges_are_kept_for_the_full_goal_set() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: WebShop's own split
        goals = WebShopDataGoals(_catalog(1501))  # type: ignore[arg-type]
    assert goals.splits == {"eval_in": list(range(500)), "eval_out": list(range(500, 1500)), "train": [1500]}
    assert data_split_bounds(12087) == (500, 1500)


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_goals_share_every_split_with_a_warning(n: int) -> None:
    with pytest.warns(UserWarning, match="too few for disjoint splits"):
        goals = WebShopDataGoals(_catalog(n))  # type: ignore[arg-type]
    assert all(ids == list(range(n)) for ids in goals.splits.values())
