"""WebShop's own data with non-ASCII text: one ASCII folding for pages, admissible actions, the expert and the reward.

The fixture is written by the test in WebShop's file format: product names, option values, descriptions,
reviews and human instructions with accents, dashes, "ß", and text that folds to nothing (CJK).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hiergym.envs.webshop.catalog import WebShopDataCatalog
from hiergym.envs.webshop.env import WebShopEnv
from hiergym.envs.webshop.pages import to_ascii, to_ascii_key

CATEGORY = "Grocery & Gourmet Food \u203a Condiments \u203a Hot Sauce"


def _options(**groups: list[str]) -> dict[str, list[dict[str, None | str]]]:
    return {name: [{"value": v, "image": None} for v in values] for name, values in groups.items()}


PRODUCTS = [
    {"asin": "B0UNI00001", "name": "Salsa Picante Jalapeño – Fuego Mexicano, 5 fl oz",
     "full_description": "Hecha con jalapeños frescos y chile habanero. ¡Muy picante!",
     "small_description": ["Sin gluten · gluten free", "Hecho en México"], "pricing": "$6.99",
     "customization_options": _options(Flavor=["Jalapeño", "Habanero Ardiente", "Chipotle Ahumado"],
                                       Size=["5 fl oz", "10 fl oz"]),
     "query": "hot sauce", "category": "grocery", "product_category": CATEGORY},
    {"asin": "B0UNI00002", "name": "Crème Brûlée Café Ground Coffee — Medium Roast",
     "full_description": "Notes of crème brûlée and caramel, «smooth» and sweet…",
     "small_description": ["Café de Colombia", "Fair trade certified"], "pricing": "$12.50",
     "customization_options": _options(**{"Flavor Name": ["Crème Brûlée", "Café Mocha", "Dulce de Leche"],
                                          "Size": ["12 Oz", "2 Lb"]}),
     "query": "ground coffee", "category": "grocery",
     "product_category": "Grocery & Gourmet Food \u203a Beverages \u203a Coffee"},
    {"asin": "B0UNI00003", "name": "Sombrero de Paja Señorita – Straw Sun Hat, Größe L",
     "full_description": "Protección solar UPF 50+ ☀ für den Sommer.",
     "small_description": ["Sun protection UPF 50+", "Ala ancha – wide brim"], "pricing": "$18.00",
     "customization_options": _options(Color=["Beige/Rosé", "Café Noir"], Size=["Größe M", "Größe L"]),
     "query": "sun hat", "category": "fashion",
     "product_category": "Clothing, Shoes & Jewelry \u203a Women \u203a Accessories \u203a Hats"},
    {"asin": "B0UNI00004", "name": "抹茶 Matcha Green Tea Powder – Ceremonial Grade",
     "full_description": "宇治抹茶 stone-ground in Kyōto.",
     "small_description": ["Ceremonial grade", "Ōsaka packed"], "pricing": "$24.00",
     "customization_options": _options(Flavor=["抹茶味", "Genmaicha Blend"], Size=["30g 缶", "100g"]),
     "query": "matcha", "category": "grocery",
     "product_category": "Grocery & Gourmet Food \u203a Beverages \u203a Tea"},
    {"asin": "B0UNI00005", "name": "Plain Tomato Ketchup", "full_description": "Classic ketchup.",
     "small_description": ["No artificial colors"], "pricing": "$3.00",
     "customization_options": _options(Size=["20 oz", "32 oz"]),
     "query": "ketchup", "category": "grocery", "product_category": CATEGORY},
]
ATTRIBUTES = {
    "B0UNI00001": {"attributes": ["gluten free"], "instruction": "i need a gluten free jalapeño hot sauce",
                   "instruction_attributes": ["gluten free"]},
    "B0UNI00002": {"attributes": ["fair trade"], "instruction": "i want a fair trade crème brûlée ground coffee",
                   "instruction_attributes": ["fair trade"]},
    "B0UNI00003": {"attributes": ["sun protection"], "instruction": "i need a straw sun hat with sun protection",
                   "instruction_attributes": ["sun protection"]},
    "B0UNI00004": {"attributes": ["ceremonial grade"], "instruction": "find me ceremonial grade matcha — 抹茶",
                   "instruction_attributes": ["ceremonial grade"]},
    "B0UNI00005": {"attributes": ["no artificial colors"], "instruction": "i want a plain tomato ketchup",
                   "instruction_attributes": ["no artificial colors"]},
}
HUMAN = {
    "B0UNI00001": [{"asin": "B0UNI00001", "instruction": "i want a gluten free hot sauce in jalapeño flavor, 10 fl oz.",
                    "instruction_attributes": ["gluten free"], "instruction_options": ["jalapeño", "10 fl oz"]},
                   {"asin": "B0UNI00001", "instruction": "habanero ardiente hot sauce, gluten free, 5 fl oz",
                    "instruction_attributes": ["gluten free"],
                    "instruction_options": ["habanero ardiente", "5 fl oz"]}],
    "B0UNI00002": [{"asin": "B0UNI00002", "instruction": "fair trade crème brûlée ground coffee – 2 lb",
                    "instruction_attributes": ["fair trade"], "instruction_options": ["crème brûlée", "2 lb"]}],
    "B0UNI00003": [{"asin": "B0UNI00003", "instruction": "a straw sun hat with sun protection in beige rosé, größe l",
                    "instruction_attributes": ["sun protection"],
                    "instruction_options": ["beige | rosé", "größe l"]}],
    "B0UNI00004": [{"asin": "B0UNI00004", "instruction": "ceremonial grade matcha powder, 抹茶味, 100g",
                    "instruction_attributes": ["ceremonial grade"], "instruction_options": ["抹茶味", "100g"]}],
}
REVIEWS = [{"asin": "B0UNI00004", "average_rating": 5,
            "reviews": [{"title": "Délicieux", "stars": 5, "review": "とても美味しい"},
                        {"title": "Très bon", "stars": 4, "review": "Un goût très doux — parfait."}]}]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("webshop-unicode")
    for name, content in (("items_shuffle_1000.json", PRODUCTS), ("items_ins_v2_1000.json", ATTRIBUTES),
                          ("items_human_ins.json", HUMAN), ("reviews.json", REVIEWS)):
        (root / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return root


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def test_catalog_text_is_folded_once_at_load(data_dir: Path) -> None:
    catalog = WebShopDataCatalog(data_dir)
    sauce = catalog.product(0)
    assert sauce.title == "Salsa Picante Jalapeno - Fuego Mexicano, 5 fl oz"
    assert sauce.options == {"flavor": ["jalapeno", "habanero ardiente", "chipotle ahumado"],
                             "size": ["5 fl oz", "10 fl oz"]}
    hat = catalog.product(2)
    assert hat.options == {"color": ["beige | rose", "cafe noir"], "size": ["grosse m", "grosse l"]}
    matcha = catalog.product(3)
    # a value with nothing to fold keeps a distinct, typeable ASCII form (its \u escapes)
    assert matcha.options["flavor"][0] == "\\u62b9\\u8336\\u5473" == to_ascii_key("抹茶味")
    assert matcha.options["size"] == ["30g", "100g"]
    assert [r["body"] for r in matcha.reviews] == ["", "Un gout tres doux - parfait."]
    for product in catalog.products:
        texts = [product.title, product.description, *product.bullets, *product.attributes, *product.options,
                 *(v for values in product.options.values() for v in values),
                 *(str(r[k]) for r in product.reviews for k in ("title", "body"))]
        assert all(_printable_ascii(t) for t in texts), texts
        assert product.document().isascii()
    assert to_ascii("Größe – Æther Œuvre Łódź") == "Grosse - AEther OEuvre Lodz"


@pytest.mark.parametrize("human_goals", [True, False])
def test_expert_wins_every_goal_with_admissible_clicks(data_dir: Path, tmp_path: Path, human_goals: bool) -> None:
    env = WebShopEnv(data_dir=str(data_dir), human_goals=human_goals, cache_dir=str(tmp_path))
    goals = env.shop.goals.goals
    assert len(goals) == (5 if human_goals else 3 * 2 + 3 * 2 + 2 * 2 + 2 * 2 + 2)
    for goal_index, goal in enumerate(goals):
        values = goal["goal_options"].values() if isinstance(goal["goal_options"], dict) else goal["goal_options"]
        assert all(_printable_ascii(v) for v in [goal["name"], *goal["attributes"], *values])
        split = next(s for s, ids in env.shop.goals.splits.items() if goal_index in ids)
        obs, info = env.reset(options={"split": split, "task_id": env.shop.goals.splits[split].index(goal_index)})
        assert info["goal"]["instruction_text"] == goal["instruction_text"] and _printable_ascii(obs)
        plan = env.expert_plan()
        assert plan, goal["instruction_text"]
        for action in plan:
            admissible = info["admissible_actions"]
            assert action in admissible or (action.startswith("search[") and "search[<query>]" in admissible), \
                (action, admissible)
            obs, reward, terminated, _, info = env.step(action)
            assert info["action_valid"] and _printable_ascii(obs), action
        assert terminated and info["won"] and reward == 1.0, (goal["instruction_text"], info.get("reward_info"))


def test_pages_admissible_actions_and_html_agree(data_dir: Path, tmp_path: Path) -> None:
    from hiergym.envs.webshop import pages as pg

    env = WebShopEnv(data_dir=str(data_dir), cache_dir=str(tmp_path))
    env.reset(options={"split": "train", "task_id": 0})
    obs, *_, info = env.step("search[jalapeno hot sauce]")
    assert "Salsa Picante Jalapeno - Fuego Mexicano, 5 fl oz" in obs  # the folded query finds the folded title
    obs, *_, info = env.step("click[b0uni00001]")
    assert "click[jalapeno]" in info["admissible_actions"] and "[SEP] jalapeno [SEP]" in obs
    page = pg.render_html(env._elements, observation=obs, admissible=info["admissible_actions"], status="")
    assert 'value="click[jalapeno]"' in page and "Jalape" in page and "ñ" not in page
    _, _, _, _, info = env.step("click[jalapeno]")
    assert info["action_valid"] and env._state.options == {"flavor": "jalapeno"}
    # the non-ASCII spelling is not an action an agent can send (the contract's printable ASCII)
    _, _, _, _, info = env.step("click[jalapeño]")
    assert not info["action_valid"]
