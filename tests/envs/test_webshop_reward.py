"""WebShop's reward on hand-built purchases, and through the environment."""

from __future__ import annotations

import pytest

from hiergym.envs.webshop.catalog import Product
from hiergym.envs.webshop.env import WebShopEnv
from hiergym.envs.webshop.reward import fuzzy_score, get_reward, get_type_reward, normalize_color, title_nouns

PATH = "Beauty & Personal Care \u203a Hair Care \u203a Hair Extensions, Wigs & Accessories \u203a Extensions"


def make_product(**changes) -> Product:
    fields = dict(
        asin="B000000001", title="Lumina Seamless Clip-In Hair Extensions - for Women",
        description="Lumina Clip-In Hair Extensions. Made for everyday wear.",
        bullets=["Natural looking: made with care.", "Heat resistant - customers love it."], reviews=[],
        rating="N.A.", price=34.99, price_tag="$34.99", attributes=["natural looking", "heat resistant"],
        options={"color": ["black", "auburn"], "size": ["16 inch", "18 inch"]}, query="hair extensions",
        category="beauty", product_category=PATH,
    )
    fields.update(changes)
    return Product(**fields)


GOAL = {
    "asin": "B000000001", "name": "Lumina Seamless Clip-In Hair Extensions - for Women", "query": "hair extensions",
    "category": "beauty", "product_category": PATH, "attributes": ["natural looking", "heat resistant"],
    "goal_options": {"color": "black", "size": "18 inch"}, "price_upper": 50.0,
    "instruction_text": "i need a clip-in hair extension which is natural looking and heat resistant with color: "
                        "black, and size: 18 inch, and price lower than 50.00 dollars",
}
RIGHT = {"color": "black", "size": "18 inch"}


def test_the_right_purchase_scores_one() -> None:
    reward, info = get_reward(make_product(), GOAL, 34.99, RIGHT)
    assert reward == 1.0
    assert info["r_type"] == 1.0 and info["r_att"] == 1.0 and info["r_option"] == 1.0 and info["r_price"] is True
    assert info["w_att"] == pytest.approx(2 / 5) and info["w_option"] == pytest.approx(2 / 5)


def test_right_product_wrong_option() -> None:
    reward, info = get_reward(make_product(), GOAL, 34.99, {"color": "auburn", "size": "18 inch"})
    assert reward == pytest.approx(4 / 5) and info["r_option"] == 0.5
    # an option left unselected earns nothing either
    assert get_reward(make_product(), GOAL, 34.99, {"color": "black"})[0] == pytest.approx(4 / 5)
    # sizes match exactly: 16 inch is not 18 inch, although the words are close
    assert get_reward(make_product(), GOAL, 34.99, {"color": "black", "size": "16 inch"})[0] == pytest.approx(4 / 5)


def test_right_options_over_price() -> None:
    reward, info = get_reward(make_product(price=59.99), GOAL, 59.99, RIGHT)
    assert reward == pytest.approx(4 / 5) and info["r_price"] is False


def test_missing_attribute() -> None:
    product = make_product(attributes=["natural looking"], bullets=["Natural looking: made with care."])
    reward, info = get_reward(product, GOAL, 34.99, RIGHT)
    assert reward == pytest.approx(4 / 5) and info["r_att"] == 0.5


def test_attribute_found_in_text_counts_like_webshop() -> None:
    product = make_product(attributes=["DUMMY_ATTR"], description="Heat resistant fibres that look natural looking.")
    assert get_reward(product, GOAL, 34.99, RIGHT)[1]["r_att"] == 1.0


def test_wrong_type_scales_the_reward() -> None:
    tshirt = make_product(title="Threadline Classic Men's T-Shirt - Casual Style", query="men t-shirt",
                          product_category="Clothing, Shoes & Jewelry \u203a Men \u203a Clothing \u203a Shirts")
    reward, info = get_reward(tshirt, GOAL, 34.99, RIGHT)
    assert info["r_type"] == 0.0 and reward == 0.0  # no title noun in common
    # one noun in common out of five (20%): neither query nor category nor title match -> 0.5
    wig = make_product(title="Threadline Hair Turban Wrap", query="hair turban",
                       product_category="Clothing, Shoes & Jewelry \u203a Women \u203a Accessories")
    info = get_type_reward(wig, GOAL)
    assert info["title_score"] == pytest.approx(1 / 5) and info["r_type"] == 0.5
    assert get_reward(wig, GOAL, 34.99, RIGHT)[0] == pytest.approx(0.5)
    # under 10% of the goal's title nouns -> 0.1
    long_goal = dict(GOAL, name="Lumina Seamless Clip-In Hair Extensions Kit with Brush Comb Clips Bag Gloves Net")
    assert len(title_nouns(long_goal["name"])) > 10
    assert get_type_reward(wig, long_goal)["r_type"] == 0.1
    # same category path (two or more shared levels) keeps the full scale despite a different query
    shampoo = make_product(title="Lumina Hair Shampoo", query="shampoo",
                           product_category="Beauty & Personal Care \u203a Hair Care \u203a Shampoos")
    assert get_type_reward(shampoo, GOAL) == {"r_type": 1.0, "query_match": False, "category_match": True,
                                              "title_score": pytest.approx(2 / 5)}


def test_normalize_color_matches_webshop() -> None:
    # WebShop's own test cases for normalize_color
    for value, expected in [("", ""), ("black forest", "black"), ("violet lavender", "lavender"),
                            ("steelivy fuchsia", "fuchsia"), ("123alabaster", "alabaster"), ("webshop", "webshop")]:
        assert normalize_color(value) == expected


def test_fuzzy_score_is_thefuzz_token_set_ratio() -> None:
    assert fuzzy_score("natural", "natural looking") == 100  # a subset of tokens is a full match
    assert fuzzy_score("Natural-Looking!", "natural looking") == 100  # thefuzz's preprocessing
    assert fuzzy_score("pack of 2", "pack of 4") > 85  # WebShop's fuzzy option matching is this lenient
    assert fuzzy_score("sugar free", "gluten free") <= 85
    assert isinstance(fuzzy_score("a", "b"), int)


def test_purchases_through_the_env(tmp_path) -> None:
    env = WebShopEnv(num_products=1500, cache_dir=str(tmp_path))
    for seed in range(40):
        env.reset(seed=seed)
        goal = env._goal
        plan = env.expert_plan()
        for action in plan[:-1]:  # everything but "buy now": on a right product's page with the right options
            env.step(action)
        assert env._state.kind == "item"
        product = env.catalog.product(env._state.item)
        wrong = {name: next((v for v in values if v != goal["goal_options"][name]), None)
                 for name, values in product.options.items()}
        name, value = next(((n, v) for n, v in wrong.items() if v is not None), (None, None))
        if name is None:
            continue
        env.step(f"click[{value}]")  # right product, wrong option
        _, reward, terminated, _, info = env.step("click[buy now]")
        n = len(goal["attributes"]) + len(goal["goal_options"]) + 1
        assert terminated and reward == pytest.approx((n - 1) / n) and not info["won"]
        assert info["reward_info"]["options"][name] == value
        return
    pytest.fail("no goal with a product offering a second option value")
