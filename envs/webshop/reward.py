"""WebShop's reward for a purchase, computed as ``web_agent_site/engine/goal.py`` computes it.

``reward = (attribute matches + option matches + [price <= price_upper]) / (#goal attributes + #goal options + 1)``,
scaled by the product-type match ``r_type``:

- ``r_type`` (:func:`get_type_reward`): 1.0, or 0.5 when neither the query, the category path (two or more
  shared levels) nor the title (more than 20% of the goal title's nouns) match, 0.1 when under 10% of the goal
  title's nouns appear in the purchased title, 0.0 when none do.
- attributes (:func:`get_attribute_reward`): a goal attribute matches if one of the purchased product's
  attributes is a fuzzy match (``token_set_ratio`` > 85) or it appears in the title, bullet points or
  description.
- options (:func:`get_option_reward`): every purchased option value, colour-normalised, matches a goal option
  exactly (for ``size``) or fuzzily (other options), or appears in the product's text.

Two things differ from WebShop, for the offline setting: WebShop finds title nouns with spaCy's
``en_core_web_lg`` tagger (a large model download); :func:`title_nouns` keeps the words of the title that are
not stop words, numbers or common adjectives, which is what the tagger returns for product titles in the vast
majority of cases. Fuzzy matching uses rapidfuzz, the library thefuzz itself calls, with thefuzz's
preprocessing and rounding, so scores are the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

#: Option names matched exactly rather than fuzzily (WebShop's ``EXACT_MATCH_OPTS``).
EXACT_MATCH_OPTS = ("size",)

#: The colours WebShop normalises option values to (``web_agent_site/engine/normalize.py``), in its order:
#: a value is replaced by the first of these it contains.
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream",
    "crystal", "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape",
    "graphite", "grass", "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender",
    "lemon", "leopard", "light", "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint",
    "mocha", "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive", "orange", "peach",
    "pewter", "pink", "plum", "purple", "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire",
    "seashell", "silver", "skull", "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal",
    "tiger", "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)

_STOPWORDS = frozenset("""
a an and are as at be by for from has have in into is it its of on or the this that to with without your you
our we i me my he she they them their his her not no so up out over under than then these those all any each
per pcs pc pack set x w l oz fl ft inch inches cm mm lb lbs count ounce ounces pound pounds
""".split())

# Adjectives and other non-nouns common in product titles; a tagger would not count them as nouns.
_ADJECTIVES = frozenset("""
new best great good premium professional natural organic original classic modern vintage small large big mini
long short high low light dark soft hard fresh pure clean gentle daily everyday extra super ultra deluxe
portable wireless compatible adjustable durable lightweight heavy waterproof reusable comfortable cute elegant
casual slim thin thick straight wavy seamless silky hydrating overnight renewing clarifying volumizing
nourishing velvet satin creamy bold glossy shimmer quick chewy crunchy layered soft baked smooth signature
morning soothing calming deluxe trail roasted fiery smoky reserve hot cushioned athletic essential boho maxi
midi tapered skinny quilted hooded cropped protective rugged clear hybrid fast compact dual active smart
decorative velvet ergonomic executive hotel rustic cozy luxury woven fabric minimalist bedside
""".split()) | frozenset(COLOR_SET)

_WORD = re.compile(r"[a-z]+")


@lru_cache(maxsize=65536)
def title_nouns(title: str) -> frozenset[str]:
    """The nouns of a product title (lower-cased), approximating spaCy's NOUN/PROPN tags for titles."""
    return frozenset(w for w in _WORD.findall(title.lower())
                     if len(w) > 1 and w not in _STOPWORDS and w not in _ADJECTIVES)


def normalize_color(value: str) -> str:
    """WebShop's ``normalize_color``: the first colour of :data:`COLOR_SET` found in ``value``, else ``value``."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


def fuzzy_score(a: str, b: str) -> int:
    """thefuzz's ``token_set_ratio`` (ASCII-only, full preprocessing, rounded to an int)."""
    a = a.encode("ascii", "ignore").decode()
    b = b.encode("ascii", "ignore").decode()
    return int(round(fuzz.token_set_ratio(a, b, processor=default_process)))


def get_type_reward(product: Any, goal: Mapping[str, Any]) -> dict[str, Any]:
    """How well the purchased product's type matches the goal's (query, category path, title nouns)."""
    query_match = product.query == goal["query"]
    purchased_path = {x.strip() for x in product.product_category.split("\u203a")}
    goal_path = {x.strip() for x in goal["product_category"].split("\u203a")}
    category_match = len(purchased_path & goal_path) >= 2

    purchased_nouns = title_nouns(product.title)
    desired_nouns = title_nouns(goal["name"])
    if not desired_nouns:
        title_score = 0.2
    else:
        title_score = len(purchased_nouns & desired_nouns) / len(desired_nouns)

    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def _in_text(needle: str, product: Any) -> bool:
    return (needle in product.title.lower() or needle in " ".join(product.bullets).lower()
            or needle in product.description.lower())


def get_attribute_reward(product: Any, goal_attributes: Sequence[str]) -> tuple[float, int]:
    """Share of goal attributes the purchased product has (fuzzy on its attributes, or found in its text)."""
    matches = 0
    for goal_attr in goal_attributes:
        if any(fuzzy_score(p_attr, goal_attr) > 85 for p_attr in product.attributes) or _in_text(goal_attr, product):
            matches += 1
    return (matches / len(goal_attributes) if goal_attributes else 0.0), matches


def get_option_reward(product: Any, goal_options: Sequence[str],
                      purchased_options: Mapping[str, str]) -> tuple[float | None, int]:
    """Matches of the purchased option values against the goal options (WebShop counts per purchased option)."""
    purchased = {k: normalize_color(v) for k, v in purchased_options.items()}
    goals = [normalize_color(o) for o in goal_options]
    matches = 0
    for name, value in purchased.items():
        matched = False
        if name.lower() in EXACT_MATCH_OPTS:
            matched = value in goals
        else:
            matched = any(fuzzy_score(g, value) > 85 for g in goals)
        if matched or _in_text(value, product):
            matches += 1
    return (matches / len(goals) if goals else None), matches


def goal_option_values(goal: Mapping[str, Any]) -> list[str]:
    options = goal["goal_options"]
    return list(options.values()) if isinstance(options, Mapping) else list(options)


def get_reward(product: Any, goal: Mapping[str, Any], price: float,
               options: Mapping[str, str]) -> tuple[float, dict[str, Any]]:
    """WebShop's ``get_reward(..., verbose=True)``: the total reward and its parts.

    ``product`` has ``title``, ``bullets``, ``description``, ``attributes``, ``query``, ``product_category``;
    ``goal`` has ``name`` (the target title), ``query``, ``product_category``, ``attributes``,
    ``goal_options`` (dict or list) and ``price_upper``; ``price`` is what the purchase cost and ``options``
    the option values selected on the item page.
    """
    type_info = get_type_reward(product, goal)
    r_price = price <= goal["price_upper"] if goal["price_upper"] > 0 else None
    goal_options = goal_option_values(goal)
    r_att, n_attr = get_attribute_reward(product, goal["attributes"])
    r_option, n_option = get_option_reward(product, goal_options, options)
    denominator = len(goal["attributes"]) + len(goal_options) + 1
    total = (n_attr + n_option + (1 if r_price else 0)) / denominator * type_info["r_type"]
    info: dict[str, Any] = {
        "r_type": type_info["r_type"],
        "r_att": r_att,
        "w_att": len(goal["attributes"]) / denominator,
        "query_match": type_info["query_match"],
        "category_match": type_info["category_match"],
        "title_score": type_info["title_score"],
    }
    if r_option is not None:
        info["r_option"] = r_option
        info["w_option"] = len(goal_options) / denominator
    if r_price is not None:
        info["r_price"] = bool(r_price)
        info["w_price"] = 1 / denominator
    return float(total), info
