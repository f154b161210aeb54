"""WebShop's page-reading expert (``expert_knowledge="observed"``): it decides from the page alone (the same
pages give the same actions whatever the hidden goal), replans exactly the rest of its path from any of its
pages, finishes from pages another policy reached, and reads the instruction's wording."""

from __future__ import annotations

import copy

import pytest

from hiergym.envs.webshop import pages as pg
from hiergym.envs.webshop.env import WebShopEnv
from hiergym.envs.webshop.shopper import (
    choose_options,
    choose_product,
    named_options,
    price_bound,
    shopper_action,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebShopEnv:
    return WebShopEnv(num_products=1500, cache_dir=str(tmp_path_factory.mktemp("webshop-cache")),
                      expert_knowledge="observed")


def test_the_instruction_s_wording_is_read() -> None:
    text = "get me a women's summer dress with short sleeve with color: coral, and size: x-large, and price lower than 70.00 dollars"
    assert price_bound(text) == 70.0 and price_bound("a red mug") is None
    assert named_options(text) == {"color": "coral", "size": "x-large"}
    products = [("B01", "Ceramic Mug - Red", "$5.00"), ("B02", "Women's Summer Dress, Short Sleeve", "$80.00"),
                ("B03", "Women's Summer Dress", "$30.00"), ("B04", "Summer Dress Women's", "$20.00")]
    assert choose_product(text, products) == "B01"  # the search's first match under the bound
    assert choose_product(text, products[1:2]) == "B02"  # none affordable: the first of all
    assert choose_product(text, [("B05", "Dress", "$60.0 to $80.0"), *products[2:]]) == "B03"  # a range: its top
    assert choose_product(text, []) is None
    groups = {"color": ["floral print", "coral"], "size": ["large", "x-large"], "fit": ["regular"]}
    assert choose_options(text, groups, {"color": "coral"}) == ["x-large"]  # what is still unselected
    # without "name: value" wording, a value the text mentions (the longest)
    assert choose_options("a large x-large coral dress", groups, {}) == ["coral", "x-large"]


def test_the_same_page_gets_the_same_action_whatever_the_hidden_goal(env: WebShopEnv) -> None:
    for seed in range(8):
        env.reset(seed=seed)
        for _ in range(6):
            plan = env.expert_plan()
            if not plan:
                break
            hidden = copy.deepcopy(env)
            # another target, other hidden attributes: the page (and the instruction on it) is unchanged
            hidden._goal = {**hidden._goal, "asin": "B000000000", "attributes": ["nothing visible"],
                            "goal_options": {}, "price_upper": 1.0}
            hidden._expert_cache = None
            assert hidden.expert_plan() == plan
            assert plan[0] == shopper_action(env._elements, env._state.kind)
            env.step(plan[0])


def test_replans_are_the_rest_of_the_plan_and_every_action_is_valid(env: WebShopEnv) -> None:
    bought = 0
    for seed in range(12):
        env.reset(seed=seed, options={"split": "eval_in", "task_id": seed})
        plan = env.expert_plan()
        assert plan[0].startswith("search[") and plan[-1] == "click[buy now]" and len(plan) <= 8
        for k, action in enumerate(plan):
            assert env.expert_plan() == plan[k:]
            _, reward, terminated, _, info = env.step(action)
            assert info["action_valid"], action
        assert terminated and env.expert_plan() is None
        bought += info["won"]
    assert 0 < bought < 12  # it often wins, but not always: it knows only what the page shows


def test_it_finishes_from_pages_another_policy_reached(env: WebShopEnv, wander_to_features) -> None:
    for seed in range(5):
        env.reset(seed=seed)
        wander_to_features(env)
        plan = env.expert_plan()
        assert plan[0] == f"click[{pg.PREV_PAGE.lower()}]" and plan[-1] == "click[buy now]"
        for action in plan:
            _, _, terminated, _, info = env.step(action)
            assert info["action_valid"], action
        assert terminated


def test_unknown_expert_knowledge_is_refused_in_one_line(tmp_path) -> None:
    with pytest.raises(ValueError, match="expert_knowledge 'oracle'.*choose one of full, observed"):
        WebShopEnv(num_products=100, cache_dir=str(tmp_path), expert_knowledge="oracle")


def test_subgoals_name_what_a_planner_knows(env: WebShopEnv) -> None:
    env.reset(seed=3, options={"split": "eval_in", "task_id": 3})
    subgoals = env.expert_subgoals()
    assert [name for name, _ in subgoals] == ["search", "open a product", "buy it"]
    assert [a for _, steps in subgoals for a in steps] == env.expert_plan()


def test_options_a_click_cannot_select_are_left_alone_and_plans_always_buy(env: WebShopEnv) -> None:
    env.reset(seed=5, options={"split": "eval_in", "task_id": 5})
    env.step(env.expert_plan()[0])  # the search
    opened = env.expert_plan()[0]
    product = env.catalog.product(env.catalog.index_of(opened[len("click["):-1]))
    saved = dict(product.options)
    try:
        # "red" shown in two groups (a click sets the later one), a value with brackets, one in capitals
        product.options.clear()
        product.options.update({"color": ["red", "blue"], "pattern": ["plain", "red"], "pack": ["(2) [new]"],
                                "size": ["Small", "Large"]})
        env._goal = {**env._goal, "instruction_text": "a thing with color: red, and size: small, and pack: (2) [new]"}
        env.step(opened)
        plan = env.expert_plan()
        assert plan == ["click[red]", "click[small]", "click[buy now]"]  # each once, then the purchase
        for action in plan[:-1]:
            _, _, _, _, info = env.step(action)
            assert info["action_valid"]
        assert env.expert_plan() == ["click[buy now]"]  # "Small" shows as selected once clicked
    finally:
        product.options.clear()
        product.options.update(saved)


def test_a_search_that_finds_nothing_is_no_plan(env: WebShopEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.reset(seed=0)
    monkeypatch.setattr(env.shop, "search", lambda query: [])
    assert env.expert_plan() is None
