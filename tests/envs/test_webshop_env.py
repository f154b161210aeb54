"""hiergym/WebShop-v0: WebShop's page flow, actions, bad actions, expert, splits and goal info."""

from __future__ import annotations

import gymnasium as gym
import pytest

import hiergym  # noqa: F401  (registers the environments)
from hiergym.envs.webshop.env import SEARCH_PLACEHOLDER, WebShopEnv

SEP = " [SEP] "


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebShopEnv:
    return WebShopEnv(num_products=1500, cache_dir=str(tmp_path_factory.mktemp("webshop-cache")))


def _target_query(env: WebShopEnv) -> str:
    title = env.catalog.product(env.catalog.index_of(env._goal["asin"])).title
    return "".join(ch if ch.isalnum() or ch == " " else " " for ch in title.lower())


def test_search_page_layout_and_admissible_actions(env: WebShopEnv) -> None:
    obs, info = env.reset(seed=3)
    assert obs == f"WebShop{SEP}Instruction:{SEP}{info['task']}{SEP}Search"
    assert info["admissible_actions"] == [SEARCH_PLACEHOLDER]
    assert info["available_actions"] == {"has_search_bar": True, "clickables": ["search"]}
    assert info["page"] == "search" and info["won"] is False


def test_results_item_subpages_and_navigation(env: WebShopEnv) -> None:
    obs, info = env.reset(seed=5)
    goal = info["goal"]
    obs, reward, terminated, truncated, info = env.step(f"search[{_target_query(env)}]")
    assert info["action_valid"] and reward == 0 and not terminated
    parts = obs.split(SEP)
    assert parts[:5] == ["Instruction:", goal["instruction_text"], "Back to Search",
                         f"Page 1 (Total results: {len(env._state.results)})", "Next >"]
    assert "< Prev" not in parts  # no previous page on page 1
    # ten products per page: asin, title, price
    products = parts[5:]
    assert len(products) == 3 * 10 and all(a.startswith("B0") and p.startswith("$") for a, p in
                                          zip(products[0::3], products[2::3], strict=True))
    assert goal["asin"] in products[0::3]
    clicks = info["admissible_actions"]
    assert clicks[:2] == ["click[back to search]", "click[next >]"]
    assert f"click[{goal['asin'].lower()}]" in clicks

    obs, _, _, _, info = env.step("click[next >]")
    assert obs.split(SEP)[3:6] == [f"Page 2 (Total results: {len(env._state.results)})", "< Prev", "Next >"]
    obs, _, _, _, info = env.step("click[< prev]")
    assert "Page 1 " in obs

    obs, _, _, _, info = env.step(f"click[{goal['asin'].lower()}]")
    product = env.catalog.product(env.catalog.index_of(goal["asin"]))
    parts = obs.split(SEP)
    assert parts[2:4] == ["Back to Search", "< Prev"]
    assert parts[-7:] == [product.title, f"Price: {product.price_tag}", f"Rating: {product.rating}",
                          "Description", "Features", "Reviews", "Buy Now"]
    for name, values in product.options.items():
        assert SEP.join([name, *values]) in obs
        for value in values:
            assert f"click[{value}]" in info["admissible_actions"]

    obs, _, _, _, info = env.step("click[features]")
    assert obs.split(SEP)[2:] == ["Back to Search", "< Prev", *product.bullets]
    assert info["admissible_actions"] == ["click[back to search]", "click[< prev]"]
    obs, _, _, _, info = env.step("click[< prev]")
    assert info["page"] == "item"
    obs, _, _, _, info = env.step("click[description]")
    assert obs.endswith(product.description)
    env.step("click[< prev]")
    obs, _, _, _, info = env.step("click[reviews]")
    for review in product.reviews:
        assert f'"{review["title"]}"{SEP}{review["score"]}{SEP}{review["body"]}' in obs
    env.step("click[< prev]")
    # < Prev from the item page goes back to the results page it came from
    obs, _, _, _, info = env.step("click[< prev]")
    assert info["page"] == "results" and "Page 1 " in obs
    obs, _, _, _, info = env.step("click[back to search]")
    assert info["page"] == "search" and obs.startswith("WebShop")


def test_option_selection_is_remembered_until_results(env: WebShopEnv) -> None:
    env.reset(seed=8)
    goal = env._goal
    env.step(f"search[{_target_query(env)}]")
    _, _, _, _, info = env.step(f"click[{goal['asin'].lower()}]")
    product = env.catalog.product(env.catalog.index_of(goal["asin"]))
    name, values = next(iter(product.options.items()))
    key_before = info["state_key"]
    _, _, _, _, info = env.step(f"click[{values[-1]}]")
    assert env._state.options == {name: values[-1]} and info["state_key"] != key_before
    env.step("click[features]")
    env.step("click[< prev]")
    assert env._state.options == {name: values[-1]}  # kept across sub-pages
    env.step("click[< prev]")
    assert env._state.options == {}  # WebShop forgets options on the results page


def test_expert_wins_from_every_page(env: WebShopEnv, wander_to_features) -> None:
    for seed in range(6):
        env.reset(seed=seed)
        wander_to_features(env)
        plan = env.expert_plan()
        assert plan and len(plan) <= 12
        for action in plan:
            obs, reward, terminated, truncated, info = env.step(action)
            assert info["action_valid"], action
        assert terminated and reward == 1.0 and info["won"]
        assert env.expert_plan() is None  # nothing left to do after the purchase


def test_buying_ends_the_episode_and_reports_the_reward(env: WebShopEnv) -> None:
    env.reset(seed=1)
    plan = env.expert_plan()
    for action in plan[:-1]:
        env.step(action)
    obs, reward, terminated, truncated, info = env.step(plan[-1])
    assert terminated and not truncated
    assert obs == f"Thank you for shopping with us!{SEP}Your score (min 0.0, max 1.0){SEP}1.0"
    bought = env.catalog.product(env.catalog.index_of(info["reward_info"]["asin"]))
    assert info["reward_info"]["r_type"] == 1.0 and bought.query == info["goal"]["query"]
    assert bought.price <= info["goal"]["price_upper"] and set(info["goal"]["attributes"]) <= set(bought.attributes)
    obs2, reward2, terminated2, _, info2 = env.step("click[buy now]")
    assert reward2 == 0 and terminated2 and info2["action_valid"] is False and obs2 == obs


@pytest.mark.parametrize("action", [
    "click[checkout]",  # unknown button
    "click[search]",  # WebShop refuses clicking the search button
    "search[",  # malformed
    "search[]",  # empty query
    "search[   ]",  # blank query
    "click[]",
    "search hair extensions",
    "buy now",
    "click[next >]",  # no such button on the search page
])
def test_bad_actions_change_nothing(env: WebShopEnv, action: str) -> None:
    obs, info = env.reset(seed=2)
    obs2, reward, terminated, truncated, info2 = env.step(action)
    assert info2["action_valid"] is False and reward == 0 and not terminated
    assert obs2 == obs and info2["state_key"] == info["state_key"]


def test_search_only_from_the_search_page_and_unknown_clicks_on_results(env: WebShopEnv) -> None:
    env.reset(seed=2)
    _, _, _, _, info = env.step("search[chair]")
    key = info["state_key"]
    for action in ("search[lamp]", "click[buy now]", "click[description]", "click[b0zzzzzzzz]"):
        _, _, _, _, info = env.step(action)
        assert info["action_valid"] is False and info["state_key"] == key, action


def test_actions_forgive_case_and_spaces_and_trailing_text_like_webshop(env: WebShopEnv) -> None:
    env.reset(seed=2)
    _, _, _, _, info = env.step("  SEARCH[Office  Chair]  ")
    assert info["action_valid"] and env._state.keywords == ("office", "chair")
    _, _, _, _, info = env.step("Click[Next >]")
    assert info["action_valid"] and env._state.page == 2


def test_goal_info_and_instruction(env: WebShopEnv) -> None:
    _, info = env.reset(seed=4)
    goal = info["goal"]
    assert set(goal) >= {"asin", "attributes", "goal_options", "price_upper", "instruction_text", "query", "name"}
    product = env.catalog.product(env.catalog.index_of(goal["asin"]))
    assert set(goal["attributes"]) <= set(product.attributes) and goal["attributes"]
    for name, value in goal["goal_options"].items():
        assert value in product.options[name] and f"{name}: {value}" in goal["instruction_text"]
    assert product.price < goal["price_upper"]
    assert f"price lower than {goal['price_upper']:.2f} dollars" in goal["instruction_text"]
    assert info["task"] == goal["instruction_text"]


def test_several_products_can_satisfy_a_goal(env: WebShopEnv) -> None:
    counts = []
    for task_id in range(30):
        env.reset(options={"split": "train", "task_id": task_id})
        counts.append(len(env._winning_purchases()))
    assert min(counts) >= 1 and sum(c >= 2 for c in counts) >= 10


def test_splits_hold_out_product_types(env: WebShopEnv) -> None:
    def targets(split: str) -> set[str]:
        return {env.reset(options={"split": split, "task_id": k})[1]["goal"]["query"] for k in range(60)}

    train, eval_in, eval_out = targets("train"), targets("eval_in"), targets("eval_out")
    assert not train & eval_out and not eval_in & eval_out and len(eval_out) >= 3
    asins = {split: {env.reset(options={"split": split, "task_id": k})[1]["goal"]["asin"] for k in range(60)}
             for split in ("train", "eval_in")}
    assert not asins["train"] & asins["eval_in"]
    # fixed evaluation sets: the same task_id is the same goal whatever the seed
    a = env.reset(seed=1, options={"split": "eval_out", "task_id": 499})[1]["goal"]
    b = env.reset(seed=2, options={"split": "eval_out", "task_id": 499})[1]["goal"]
    assert a == b


def test_time_limit_is_fifteen_steps(tmp_path) -> None:
    env = gym.make("hiergym/WebShop-v0", num_products=1500, cache_dir=str(tmp_path))
    env.reset(seed=0)
    outcomes = [env.step("click[nothing]")[2:4] for _ in range(15)]
    assert outcomes == [(False, False)] * 14 + [(False, True)]  # (terminated, truncated)


def test_render_ansi_is_the_observation(tmp_path) -> None:
    env = WebShopEnv(render_mode="ansi", num_products=1500, cache_dir=str(tmp_path))
    obs, _ = env.reset(seed=0)
    assert env.render() == obs
