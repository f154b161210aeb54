"""WebShop's own data files (items_shuffle / items_ins_v2 / items_human_ins), on a fixture in their format."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from hiergym.envs.webshop.catalog import WebShopDataCatalog, find_data_files
from hiergym.envs.webshop.env import WebShopEnv
from hiergym.envs.webshop.goals import WebShopDataGoals

FIXTURE = Path(__file__).parent / "fixtures" / "webshop"


def test_loader_applies_webshop_cleaning() -> None:
    catalog = WebShopDataCatalog(FIXTURE)
    asins = [p.asin for p in catalog.products]
    assert asins == ["B07XYZ0001", "B07XYZ0002", "B07XYZ0003", "B07XYZ0004", "B07XYZ0005", "B07XYZ0006"]
    first = catalog.product(0)
    assert first.options == {"scent": ["bright citrus", "calming lavender", "simply non-scents"],
                             "size": ["3 ounce (pack of 1)", "3-ounce (2-pack)"]}
    assert first.price == 10.99 and first.price_tag == "$10.99"
    assert first.reviews == [{"title": "Works", "score": 5, "body": "No smell all day."}] and first.rating == 4.5
    assert first.attributes == ["sensitive skin", "aluminum free"]
    assert first.query == "deodorant" and first.category == "beauty"
    ranged = catalog.product(1)  # "$8.50$12.00": a price range, the price drawn inside it
    assert ranged.price_tag == "$8.5 to $12.0" and 8.5 <= ranged.price <= 12.0
    assert ranged.bullets == ["Aluminum free formula"]  # a single string becomes one bullet
    assert catalog.product(2).options["color"] == ["jet black", "light brown | blonde"]  # "/" shown as " | "
    tea = catalog.product(3)
    assert tea.price == 100.0 and tea.price_tag == "$100.0" and tea.options == {}  # WebShop's default price
    assert catalog.index_of("b07xyz0005") == 4


def test_human_goals_follow_webshop() -> None:
    catalog = WebShopDataCatalog(FIXTURE)
    goals = WebShopDataGoals(catalog, human_goals=True)
    # four human instructions with attributes (one without is skipped), shuffled with random.seed(233)
    texts = [g["instruction_text"] for g in goals.goals]
    assert len(texts) == 4
    order = list(range(4))
    random.Random(233).shuffle(order)
    unshuffled = ["I'm looking for a deodorant", "i need a long clip-in hair extension", "i want white noise",
                  "a navy machine wash t-shirt"]
    assert [unshuffled[i] for i in order] == [next(u for u in unshuffled if t.startswith(u)) for t in texts]
    for goal in goals.goals:
        product = catalog.product(catalog.index_of(goal["asin"]))
        assert goal["price_upper"] > product.price
        assert goal["instruction_text"].endswith(f", and price lower than {goal['price_upper']:.2f} dollars")
        assert goal["name"] == product.title and isinstance(goal["goal_options"], list)
    deodorant = next(g for g in goals.goals if g["asin"] == "B07XYZ0001")
    assert deodorant["instruction_text"].startswith("I'm looking for a deodorant for sensitive skin in bright "
                                                    "citrus, 3 ounce pack of 1, and price")  # final "." stripped
    assert deodorant["goal_options"] == ["bright citrus", "3 ounce (pack of 1)"]


def test_synthetic_goals_enumerate_option_combinations() -> None:
    catalog = WebShopDataCatalog(FIXTURE, human_goals=False)
    goals = WebShopDataGoals(catalog, human_goals=False).goals
    deodorant = [g for g in goals if g["asin"] == "B07XYZ0001"]
    assert len(deodorant) == 3 * 2  # every scent x size combination
    assert any(g["instruction_text"].startswith("i need a natural deodorant for sensitive skin with scent: bright "
                                                "citrus, and size: 3 ounce (pack of 1), and price lower than")
               for g in deodorant)


def test_env_runs_on_webshop_data(tmp_path) -> None:
    env = WebShopEnv(data_dir=str(FIXTURE), cache_dir=str(tmp_path))
    assert env.catalog.kind == "webshop"
    won = 0
    for task_id in range(4):
        obs, info = env.reset(options={"split": "eval_in", "task_id": task_id})
        assert obs.isascii() and obs.startswith("WebShop [SEP] Instruction: [SEP] ")
        plan = env.expert_plan()
        if plan is None:
            continue
        for action in plan:
            obs, reward, terminated, truncated, info = env.step(action)
            assert info["action_valid"], action
        won += info["won"]
    assert won >= 3
    # the search index was cached beside the data's fingerprint
    assert any(p.name.startswith("webshop-data-") for p in tmp_path.iterdir())


def test_non_ascii_titles_are_folded_to_ascii(tmp_path) -> None:
    env = WebShopEnv(data_dir=str(FIXTURE), cache_dir=str(tmp_path))
    env.reset(options={"split": "train", "task_id": 0})
    obs, _, _, _, info = env.step("search[ginger fresh deodorant]")
    assert "Ginger Fresh Deodorant - Aluminum Free, 3 oz" in obs and obs.isascii()


def test_webshop_data_env_var_and_split_ranges(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSHOP_DATA", str(FIXTURE))
    env = WebShopEnv(cache_dir=str(tmp_path))
    assert env.catalog.kind == "webshop"
    assert WebShopDataGoals.SPLIT_RANGES == {"eval_in": (0, 500), "eval_out": (500, 1500), "train": (1500, None)}


def test_missing_files_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_data_files(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="items_shuffle"):
        find_data_files(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(FIXTURE / "items_shuffle_1000.json", partial / "items_shuffle_1000.json")
    shutil.copy(FIXTURE / "items_ins_v2_1000.json", partial / "items_ins_v2_1000.json")
    with pytest.raises(FileNotFoundError, match="items_human_ins.json"):
        WebShopDataCatalog(partial)
    assert len(WebShopDataCatalog(partial, human_goals=False)) == 6
    (partial / "items_shuffle.json").write_text(json.dumps(json.loads((partial / "items_shuffle_1000.json")
                                                                      .read_text())[:2]))
    assert len(WebShopDataCatalog(partial, human_goals=False)) == 2  # the full file is preferred


def test_env_with_webshop_synthetic_goals(tmp_path) -> None:
    env = WebShopEnv(data_dir=str(FIXTURE), human_goals=False, cache_dir=str(tmp_path))
    goals = env.shop.goals.goals
    assert len(goals) == 3 * 2 + 2 + 2 + 1 + 2 + 2 * 2  # every option combination of every product
    won = 0
    for task_id in range(6):
        _, info = env.reset(options={"split": "eval_in", "task_id": task_id})
        assert isinstance(info["goal"]["goal_options"], dict)
        for action in env.expert_plan() or []:
            _, _, _, _, info = env.step(action)
        won += info["won"]
    assert won >= 5
