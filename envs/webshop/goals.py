"""Shopping goals: instructions built the way WebShop builds them, and the train / eval splits.

A goal is WebShop's goal dict: the target ``asin``, its ``name`` (title), ``query``, ``category``,
``product_category``, the goal ``attributes``, ``goal_options`` and ``price_upper``, and the
``instruction_text`` the agent reads.

- Generated catalog (:class:`GeneratedGoals`): the target product's type noun, one to three of its attributes,
  one value of each of its options and WebShop's price bound, worded like WebShop's synthetic instructions
  ("i need a clip-in hair extension which is natural looking with color: black, and size: 18 inch, and price
  lower than 50.00 dollars"). Splits: ``eval_out`` targets the held-out product types
  (:data:`taxonomy.HELD_OUT_TYPES`, one per category); the other products are divided by the last digit of their
  asin code, 1 in 10 into ``eval_in`` and the rest into ``train``, so evaluation targets are never training
  targets.
- WebShop's data (:class:`WebShopDataGoals`): WebShop's human goals (or synthetic ones), shuffled with
  ``random.seed(233)`` exactly as WebShop's ``SimServer`` does; ``eval_in`` is WebShop's test set (goals
  0-499), ``eval_out`` its validation range (500-1499) and ``train`` the rest (1500+), the split WebShop's
  baselines use. Fewer goals than that (a data subset) are split so that the three sets stay disjoint
  (:func:`data_split_bounds`, with a warning); their text is folded to ASCII like the catalog's.

``task_id`` k of a split addresses a fixed goal, so task ids 0..499 are a fixed evaluation set of 500 goals.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from hiergym.envs.core import stable_seed
from hiergym.envs.webshop import taxonomy as tx
from hiergym.envs.webshop.catalog import GeneratedCatalog, WebShopDataCatalog
from hiergym.envs.webshop.pages import to_ascii, to_ascii_key

#: WebShop's price bounds: the goal's bound is drawn among the first four of these above the target's price.
PRICE_RANGE = [10.0 * i for i in range(1, 100)]
NO_PRICE_BOUND = 1_000_000

#: Size of each fixed evaluation set (like WebShop's 500-goal test set).
EVAL_SET_SIZE = 500

_MASS_NOUNS = ("shampoo", "granola", "ground coffee", "herbal tea", "hot sauce", "nail polish",
               "lipstick", "natural deodorant")


def price_bound(price: float, rnd: random.Random) -> tuple[float, str]:
    """WebShop's price bound: the larger of two draws among the next four multiples of 10 above ``price``."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) >= 2:
        _, upper = sorted(rnd.sample(candidates, 2))
        return upper, f", and price lower than {upper:.2f} dollars"
    return NO_PRICE_BOUND, ""


def option_text(goal_options: Mapping[str, str]) -> str:
    """WebShop's synthetic option wording: `` with color: black, and size: 18 inch``."""
    text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
    return " with " + text if text else ""


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


# Last words that make an attribute read as a description ("sugar free", "natural looking") rather than a
# thing the product has ("lumbar support") or a use it is for ("dry skin").
_DESCRIPTIVE = frozenset("""free resistant proof friendly looking lasting safe based certified wrapped tested
compatible efficient washable included sided soft drying toxic greasy pigmented organic unsalted vegan waterproof
shockproof hypoallergenic lightweight foldable stackable packable dimmable cancelling gmo ready slip""".split())
_FOR_USE = frozenset({"skin", "hair", "growth"})
_PLURAL_NOUNS = ("mixed nuts", "men's slim jeans")


def _article(phrase: str) -> str:
    # by sound: "a usb c charger", "an hdmi cable"
    vowel_sound = (phrase[0] in "aeiou" and not phrase.startswith(("usb", "uni"))) or phrase.startswith("hdmi")
    return "an " if vowel_sound else "a "


def instruction_for(noun: str, attributes: list[str], rnd: random.Random) -> str:
    """A natural request for a product type with some attributes, worded by what each attribute is.

    "i need a lipstick which is long lasting and cruelty free", "i am looking for an office chair with lumbar
    support", "find me a face moisturizer which is fragrance free, for dry skin", "i want a vegan hot sauce".
    """
    opening = rnd.choice(tx.INSTRUCTION_OPENINGS)
    countable = noun not in _MASS_NOUNS and noun not in _PLURAL_NOUNS
    descriptive = [a for a in attributes if a.split()[-1] in _DESCRIPTIVE]
    uses = [a for a in attributes if a.split()[-1] in _FOR_USE]
    things = [a for a in attributes if a not in descriptive and a not in uses]
    if descriptive and len(descriptive) == len(attributes) == 1 and rnd.random() < 0.5:
        head = f"{descriptive[0]} {noun}"  # "a sugar free hot sauce"
        descriptive = []
    else:
        head = noun
    clauses = []
    if descriptive:
        verb = "is" if countable or noun in _MASS_NOUNS else "are"
        clauses.append(f"{rnd.choice(['which', 'that'])} {verb} {_join(descriptive)}")
    if things:
        clauses.append(f"with {_join(things)}")
    if uses:
        clauses.append(f"for {_join(uses)}")
    article = _article(head) if countable else ""
    return f"{opening} {article}{head}" + (" " if clauses else "") + ", ".join(clauses)


def goal_record(product: Any, *, instruction_text: str, attributes: list[str], goal_options: Any,
                price_upper: float, name: str | None = None) -> dict[str, Any]:
    return {
        "asin": product.asin,
        "category": product.category,
        "query": product.query,
        "name": name if name is not None else product.title,
        "product_category": product.product_category,
        "instruction_text": instruction_text,
        "attributes": list(attributes),
        "price_upper": float(price_upper),
        "goal_options": goal_options,
    }


class GeneratedGoals:
    """Goals over a :class:`GeneratedCatalog`; see the module docstring for the splits."""

    def __init__(self, catalog: GeneratedCatalog) -> None:
        self.catalog = catalog
        held_out = np.isin(catalog.type_id, list(tx.HELD_OUT_TYPES))
        # asin codes are a bijective scramble of the product order, so their last digit is a fair 1-in-10 draw
        in_eval = catalog.asin_code % 10 == 0
        pools = {"train": np.flatnonzero(~held_out & ~in_eval), "eval_in": np.flatnonzero(~held_out & in_eval),
                 "eval_out": np.flatnonzero(held_out)}
        # A fixed order per split, so task_id k is the same goal in every process.
        self.pools = {}
        for split, pool in pools.items():
            if len(pool) == 0:  # a tiny catalog: fall back to every product rather than an empty split
                pool = np.arange(len(catalog))
            order = np.random.default_rng(stable_seed("webshop-goal-order", split, catalog.seed)).permutation(len(pool))
            self.pools[split] = pool[order]

    def size(self, split: str) -> int:
        return len(self.pools[split])

    def goal(self, split: str, task_id: int | None, rng: np.random.Generator) -> tuple[int, dict[str, Any]]:
        """``(goal number, goal)``: task ``task_id`` of ``split``, or a goal drawn with ``rng``."""
        pool = self.pools[split]
        number = task_id if task_id is not None else int(rng.integers(0, 2**62))
        index = int(pool[number % len(pool)])
        rnd = random.Random(stable_seed("webshop-goal", split, number, self.catalog.seed))
        return number, self.make_goal(index, rnd)

    def make_goal(self, index: int, rnd: random.Random) -> dict[str, Any]:
        product = self.catalog.product(index)
        t = self.catalog.product_type(index)
        k = min(len(product.attributes), rnd.choice([1, 2, 2, 2, 3, 3]))
        attributes = sorted(rnd.sample(product.attributes, k), key=product.attributes.index)
        goal_options = {name: rnd.choice(values) for name, values in sorted(product.options.items()) if values}
        price_upper, price_text = price_bound(product.price, rnd)
        text = instruction_for(t.noun, attributes, rnd) + option_text(goal_options) + price_text
        return goal_record(product, instruction_text=text, attributes=attributes, goal_options=goal_options,
                           price_upper=price_upper)


def data_split_bounds(num_goals: int) -> tuple[int, int]:
    """``(a, b)``: goals ``[0, a)`` are ``eval_in``, ``[a, b)`` ``eval_out`` and ``[b, num_goals)`` ``train``.

    - More than 1,500 goals: WebShop's ranges, ``(500, 1500)``.
    - 502 to 1,500 goals: ``eval_in`` is still WebShop's test ids 0-499; the rest is halved between
      ``eval_out`` and ``train`` (``train`` gets the odd one).
    - 3 to 501 goals: a proportional split, 10% ``eval_in``, 10% ``eval_out`` (at least one goal each), the
      rest ``train``.
    - 1 or 2 goals cannot make three disjoint non-empty sets: ``(0, 0)``, and the caller lets every split use
      every goal.
    """
    if num_goals > 1500:
        return 500, 1500
    if num_goals >= 502:
        return 500, 500 + (num_goals - 500) // 2
    if num_goals >= 3:
        tenth = max(1, num_goals // 10)
        return tenth, 2 * tenth
    return 0, 0


class WebShopDataGoals:
    """WebShop's own goals over a :class:`WebShopDataCatalog` (human by default, or synthetic)."""

    SPLIT_RANGES = {"eval_in": (0, 500), "eval_out": (500, 1500), "train": (1500, None)}

    def __init__(self, catalog: WebShopDataCatalog, human_goals: bool = True, price_seed: int = 0) -> None:
        self.catalog = catalog
        rnd = random.Random(price_seed)
        goals = self._human_goals(rnd) if human_goals else self._synthetic_goals(rnd)
        if not goals:
            raise ValueError("the WebShop data holds no goal: items_human_ins.json (or the instructions in "
                             "items_ins_v2*.json for human_goals=False) match none of the products loaded")
        random.Random(233).shuffle(goals)  # WebShop: random.seed(233); random.shuffle(self.goals)
        self.goals = goals
        n = len(goals)
        a, b = data_split_bounds(n)
        if a == 0:
            self.splits = dict.fromkeys(self.SPLIT_RANGES, list(range(n)))
            warnings.warn(f"the WebShop data holds {n} goal(s), too few for disjoint splits: train, eval_in and "
                          "eval_out all use every goal", stacklevel=2)
        else:
            self.splits = {"eval_in": list(range(a)), "eval_out": list(range(a, b)), "train": list(range(b, n))}
            if n <= 1500:
                warnings.warn(f"the WebShop data holds {n} goals, fewer than WebShop's ranges need (eval_in "
                              f"0-499, eval_out 500-1499, train 1500+): split as eval_in 0-{a - 1}, eval_out "
                              f"{a}-{b - 1}, train {b}-{n - 1} (see docs/webshop.md)", stacklevel=2)

    def _human_goals(self, rnd: random.Random) -> list[dict[str, Any]]:
        goals = []
        for product in self.catalog.products:
            for ins in product.extra.get("instructions", []):
                attributes = ins.get("instruction_attributes") or []
                if not attributes:
                    continue
                price_upper, price_text = price_bound(product.price, rnd)
                goals.append(goal_record(
                    product, instruction_text=to_ascii(ins["instruction"].strip(".")) + price_text,
                    attributes=[to_ascii_key(a) for a in attributes],
                    goal_options=[to_ascii_key(o) for o in ins.get("instruction_options") or []],
                    price_upper=price_upper, name=product.extra.get("name", product.title)))
        return goals

    def _synthetic_goals(self, rnd: random.Random) -> list[dict[str, Any]]:
        goals = []
        for product in self.catalog.products:
            text = to_ascii(product.extra.get("instruction_text") or "")
            attributes = [to_ascii_key(a) for a in product.extra.get("instruction_attributes") or []]
            if not text or not attributes:
                continue
            price_upper, price_text = price_bound(product.price, rnd)
            names = sorted(product.options)
            for combination in itertools.product(*(product.options[n] for n in names)):
                goal_options = dict(zip(names, combination, strict=True))
                goals.append(goal_record(
                    product, instruction_text=f"{text}{option_text(goal_options)}{price_text}",
                    attributes=attributes, goal_options=goal_options, price_upper=price_upper))
        return goals

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def goal(self, split: str, task_id: int | None, rng: np.random.Generator) -> tuple[int, dict[str, Any]]:
        ids = self.splits[split]
        number = task_id if task_id is not None else int(rng.integers(0, len(ids)))
        goal_index = ids[number % len(ids)]
        return goal_index, dict(self.goals[goal_index])
