"""Product catalogs: a seeded generator, and a loader for WebShop's own product files.

Both give the same interface (:class:`Catalog`): ``len(catalog)``, ``catalog.product(i)`` (a :class:`Product`
with the fields WebShop's pages and reward read), ``catalog.index_of(asin)`` and ``catalog.documents()``
(the text the search index holds, built as WebShop builds its Lucene documents: title, description, first
bullet point and the options, lower-cased).

:class:`GeneratedCatalog` draws every product attribute as numpy arrays in one vectorised pass (100k products
in about a second) and renders a product's text only when a page or the index asks for it. Products come
in *families*: one to four products of the same type with the same attributes but different brands, titles,
prices and option values, so that several products can satisfy a goal, as in the real data.

:class:`WebShopDataCatalog` reads ``items_shuffle*.json`` (products), ``items_ins_v2*.json`` (attributes and
synthetic instructions), ``items_human_ins.json`` (human instructions) and, when present, ``reviews.json``, in
WebShop's own format, and applies WebShop's ``load_products`` cleaning (asin filter, de-duplication, price
parsing, option values lower-cased with ``/`` shown as `` | ``). Its text is folded to printable ASCII once,
here (:func:`~hiergym.envs.webshop.pages.to_ascii`): titles, descriptions, bullet points, reviews, option
names and values, attributes. Pages, admissible actions, the search index, the expert and the reward then all
read the same strings (an option ``Jalapeño`` is ``jalapeno`` everywhere).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hiergym.envs.core import stable_seed
from hiergym.envs.webshop import taxonomy as tx
from hiergym.envs.webshop.pages import to_ascii, to_ascii_key

#: Bump when the generator changes, so on-disk caches of older catalogs are not reused.
GENERATOR_VERSION = 3

_MAX_ATTRS = max(len(t.attributes) for t in tx.PRODUCT_TYPES)
_MAX_OPTION_SLOTS = max(len(t.options) for t in tx.PRODUCT_TYPES)
_MAX_OPTION_VALUES = max(len(v) for t in tx.PRODUCT_TYPES for v in t.options.values())
_ASIN_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclass
class Product:
    """One product, with the fields of WebShop's product records that pages and the reward use."""

    asin: str
    title: str
    description: str
    bullets: list[str]
    reviews: list[dict[str, Any]]
    rating: Any
    price: float
    price_tag: str
    attributes: list[str]
    options: dict[str, list[str]]
    query: str
    category: str
    product_category: str
    extra: dict[str, Any] = field(default_factory=dict)

    def option_text(self) -> str:
        parts = [f"{name}: {', '.join(values)}" for name, values in self.options.items()]
        return ", and ".join(parts)

    def document(self) -> str:
        """The text WebShop indexes for search: title, description, first bullet, options; lower-cased."""
        first_bullet = self.bullets[0] if self.bullets else ""
        return " ".join([self.title, self.description, first_bullet, self.option_text()]).lower()


class Catalog:
    """Interface shared by the generated and the loaded catalog."""

    kind: str = "catalog"

    def __len__(self) -> int:
        raise NotImplementedError

    def product(self, index: int) -> Product:
        raise NotImplementedError

    def asin(self, index: int) -> str:
        return self.product(index).asin

    def index_of(self, asin: str) -> int | None:
        raise NotImplementedError

    def summary(self, index: int) -> tuple[str, str, str]:
        """``(asin, title, price tag)``: what a results page shows of a product."""
        product = self.product(index)
        return product.asin, product.title, product.price_tag

    def documents(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self.product(i).document()


# ----------------------------------------------------------------------------------------------- generator
def _bits(mask: int) -> list[int]:
    return [j for j in range(mask.bit_length()) if mask >> j & 1]


def _random_subset_masks(rng: np.random.Generator, pool_sizes: np.ndarray, low: np.ndarray,
                         high: np.ndarray, width: int) -> np.ndarray:
    """For each row, a bitmask of ``k`` distinct items of ``range(pool_size)``, ``k`` uniform in [low, high]."""
    n = len(pool_sizes)
    keys = rng.random((n, width))
    keys[np.arange(width)[None, :] >= pool_sizes[:, None]] = np.inf  # items beyond the pool never chosen
    order = np.argsort(keys, axis=1)
    k = rng.integers(low, np.maximum(low, high) + 1)
    chosen = np.arange(width)[None, :] < k[:, None]
    masks = np.zeros(n, dtype=np.int64)
    rows = np.repeat(np.arange(n), width).reshape(n, width)
    np.bitwise_or.at(masks, rows[chosen], (1 << order[chosen]).astype(np.int64))
    return masks


class GeneratedCatalog(Catalog):
    """A catalog of ``size`` products drawn from ``seed``; the same (seed, size) gives the same catalog.

    Columns (numpy arrays, one row per product): ``type_id``, ``family``, ``brand``, ``descriptor``, ``suffix``,
    ``title_attr`` (whether the title names the first attribute), ``attr_mask`` (bits over the type's
    attributes), ``option_masks`` (bits over each option's values), ``price``, ``n_reviews``, ``text_seed``,
    ``asin_code`` (an integer rendered as a 10-character ASIN "B0XXXXXXXX").
    """

    kind = "generated"
    COLUMNS = ("type_id", "family", "brand", "descriptor", "suffix", "title_attr", "attr_mask", "option_masks",
               "price", "n_reviews", "text_seed", "asin_code")

    def __init__(self, columns: dict[str, np.ndarray], seed: int) -> None:
        self.seed = seed
        for name in self.COLUMNS:
            setattr(self, name, columns[name])
        self.types = tx.PRODUCT_TYPES
        self._asins = np.array(["B0" + "".join(chars) for chars in self._asin_chars(self.asin_code)])
        self._asin_to_index = {a: i for i, a in enumerate(self._asins.tolist())}
        self.product = lru_cache(maxsize=8192)(self._render)  # type: ignore[method-assign]
        self.summary = lru_cache(maxsize=65536)(self._summary)  # type: ignore[method-assign]

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def generate(cls, seed: int = 0, size: int = 10_000) -> GeneratedCatalog:
        if size < 1:
            raise ValueError(f"a catalog needs at least one product, got size={size}")
        rng = np.random.default_rng(stable_seed("webshop-catalog", GENERATOR_VERSION, seed, size))
        types = tx.PRODUCT_TYPES
        n_types = len(types)
        # Families of 1-4 products sharing type, attributes and options.
        family_sizes = rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15], size=size)
        family_sizes = family_sizes[: int(np.searchsorted(np.cumsum(family_sizes), size)) + 1]
        n_families = len(family_sizes)
        family_type = rng.integers(0, n_types, n_families)
        n_attrs = np.array([len(t.attributes) for t in types])[family_type]
        # two to four of the type's five or six attributes: look-alike products differ in what they offer
        family_attr_mask = _random_subset_masks(rng, n_attrs, np.minimum(2, n_attrs), np.minimum(4, n_attrs),
                                                _MAX_ATTRS)
        low = np.array([t.price[0] for t in types])[family_type]
        high = np.array([t.price[1] for t in types])[family_type]
        family_price = np.exp(rng.uniform(np.log(low), np.log(high)))

        family = np.repeat(np.arange(n_families), family_sizes)[:size]
        family = family[rng.permutation(size)]  # siblings are not neighbours in the catalog
        type_id = family_type[family]
        price = family_price[family] * rng.uniform(0.8, 1.25, size)
        price = np.round(np.floor(price) + rng.choice([0.99, 0.49, 0.95, 0.0, 0.79], size=size), 2)
        # Options per product, not per family, and most of the type's values: a product's option text says
        # little about which attributes it has, as on a real store.
        option_masks = np.zeros((size, _MAX_OPTION_SLOTS), dtype=np.int64)
        for slot in range(_MAX_OPTION_SLOTS):
            n_values = np.array([len(list(t.options.values())[slot]) if slot < len(t.options) else 0
                                 for t in types])[type_id]
            masks = _random_subset_masks(rng, n_values, np.minimum(2, n_values), np.maximum(2, n_values - 1),
                                         _MAX_OPTION_VALUES)
            option_masks[:, slot] = np.where(n_values > 0, masks, 0)
        asin_code = (np.arange(size, dtype=np.int64) * 2_654_435_761 + int(rng.integers(0, 36**7))) % 36**8
        columns = {
            "type_id": type_id.astype(np.int16),
            "family": family.astype(np.int32),
            # A family's products get distinct brands: the family's base brand plus the product's rank.
            "brand": ((rng.integers(0, 16, n_families)[family] + _rank_within(family)) % 16).astype(np.int8),
            "descriptor": rng.integers(0, 5, size).astype(np.int8),
            "suffix": rng.integers(0, 5, size).astype(np.int8),
            "title_attr": (rng.random(size) < 0.15),
            "attr_mask": family_attr_mask[family],
            "option_masks": option_masks,
            "price": price,
            "n_reviews": rng.choice([0, 1, 2, 3], p=[0.2, 0.3, 0.3, 0.2], size=size).astype(np.int8),
            "text_seed": rng.integers(0, 2**31 - 1, size).astype(np.int64),
            "asin_code": asin_code,
        }
        return cls(columns, seed)

    def save(self, path: Path) -> None:
        np.savez(path, seed=np.int64(self.seed), **{name: getattr(self, name) for name in self.COLUMNS})

    @classmethod
    def load(cls, path: Path) -> GeneratedCatalog:
        with np.load(path) as data:
            return cls({name: data[name] for name in cls.COLUMNS}, int(data["seed"]))

    @staticmethod
    def _asin_chars(codes: np.ndarray) -> np.ndarray:
        digits = (codes[:, None] // (36 ** np.arange(7, -1, -1, dtype=np.int64))[None, :]) % 36
        return _ASIN_ALPHABET[digits]

    # -- access ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.type_id)

    def asin(self, index: int) -> str:
        return str(self._asins[index])

    def index_of(self, asin: str) -> int | None:
        return self._asin_to_index.get(asin.upper())

    def product_type(self, index: int) -> tx.ProductType:
        return self.types[int(self.type_id[index])]

    def attributes_of(self, index: int) -> list[str]:
        t = self.product_type(index)
        return [t.attributes[j] for j in _bits(int(self.attr_mask[index]))]

    def options_of(self, index: int) -> dict[str, list[str]]:
        t = self.product_type(index)
        return {name: [values[j] for j in _bits(int(self.option_masks[index, slot]))]
                for slot, (name, values) in enumerate(t.options.items())}

    def title(self, index: int) -> str:
        t = self.product_type(index)
        title = f"{tx.BRANDS[t.category][int(self.brand[index])]} {t.descriptors[int(self.descriptor[index])]} {t.title_noun}"
        if self.title_attr[index]:
            title += f", {t.attributes[(int(self.attr_mask[index]) & -int(self.attr_mask[index])).bit_length() - 1].title()}"
        return title + f" - {tx.TITLE_SUFFIXES[t.category][int(self.suffix[index])]}"

    def _summary(self, index: int) -> tuple[str, str, str]:
        # results pages need no description, bullets or reviews: skip rendering them
        return self.asin(index), self.title(index), f"${float(self.price[index])}"

    def _render(self, index: int) -> Product:
        index = int(index)
        t = self.product_type(index)
        rnd = random.Random(int(self.text_seed[index]))
        attributes = self.attributes_of(index)
        brand = tx.BRANDS[t.category][int(self.brand[index])]
        title = self.title(index)

        generic = list(tx.GENERIC_SENTENCES[t.category])
        rnd.shuffle(generic)
        attr_order = attributes[:]
        rnd.shuffle(attr_order)
        # bullets name every attribute, each with a generic sentence, plus one generic bullet anywhere (the
        # first bullet is indexed for search: half the time it names no attribute, so reading matters)
        bullets = [rnd.choice(tx.ATTRIBUTE_BULLETS).format(a=a, A=a[:1].upper() + a[1:], g=generic[4 + j % 4])
                   for j, a in enumerate(attr_order)]
        bullets.insert(0 if rnd.random() < 0.5 else rnd.randint(1, len(bullets)), generic[0])
        description = f"{brand} {t.title_noun}. " + " ".join(generic[1:4])
        if attributes and rnd.random() < 0.3:
            description += f" Customers tell us they chose it because it is {rnd.choice(attributes)}."

        reviews = []
        for _ in range(int(self.n_reviews[index])):
            score = rnd.choice([3, 4, 4, 5, 5, 5])
            reviews.append({"title": rnd.choice(tx.REVIEW_TITLES), "score": score,
                            "body": rnd.choice(tx.REVIEW_BODIES).format(noun=t.noun)})
        rating = round(sum(r["score"] for r in reviews) / len(reviews), 1) if reviews else "N.A."
        price = float(self.price[index])
        return Product(
            asin=self.asin(index), title=title, description=description, bullets=bullets, reviews=reviews,
            rating=rating, price=price, price_tag=f"${price}", attributes=attributes,
            options=self.options_of(index), query=t.query, category=t.category,
            product_category=t.product_category,
        )


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0, 1, 2, ...)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = np.arange(len(groups)) - run_start
    return ranks


# ------------------------------------------------------------------------------------------ WebShop data
#: File names looked for in a WebShop data directory, preferred first.
PRODUCT_FILES = ("items_shuffle.json", "items_shuffle_1000.json")
ATTRIBUTE_FILES = ("items_ins_v2.json", "items_ins_v2_1000.json")
HUMAN_INSTRUCTION_FILE = "items_human_ins.json"
REVIEW_FILE = "reviews.json"


def find_data_files(data_dir: str | os.PathLike) -> dict[str, Path | None]:
    """The WebShop files in ``data_dir``; raises ``FileNotFoundError`` naming what is missing."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"WebShop data directory {str(root)!r} does not exist; pass data_dir= or set "
                                "WEBSHOP_DATA to the folder holding items_shuffle*.json and items_ins_v2*.json")

    def first(names: tuple[str, ...]) -> Path | None:
        for name in names:
            if (root / name).is_file():
                return root / name
        matches = sorted(root.glob(names[0].replace(".json", "*.json")))
        return matches[0] if matches else None

    files = {"products": first(PRODUCT_FILES), "attributes": first(ATTRIBUTE_FILES),
             "human": root / HUMAN_INSTRUCTION_FILE if (root / HUMAN_INSTRUCTION_FILE).is_file() else None,
             "reviews": root / REVIEW_FILE if (root / REVIEW_FILE).is_file() else None}
    missing = [label for label, key in (("items_shuffle*.json", "products"), ("items_ins_v2*.json", "attributes"))
               if files[key] is None]
    if missing:
        raise FileNotFoundError(f"{str(root)!r} lacks {' and '.join(missing)} (WebShop's product files; see "
                                "WebShop's setup.sh for where to get them)")
    return files


def _parse_pricing(pricing: Any) -> tuple[list[float], str]:
    if not pricing:
        return [100.0], "$100.0"
    values = [float(Decimal(re.sub(r"[^\d.]", "", p))) for p in str(pricing).split("$")[1:]
              if re.sub(r"[^\d.]", "", p)]
    if not values:
        return [100.0], "$100.0"
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


class WebShopDataCatalog(Catalog):
    """WebShop's products, read from its JSON files (see :func:`find_data_files`).

    ``price_seed`` fixes the price WebShop draws uniformly inside a product's price range (WebShop draws it
    unseeded at start-up).
    """

    kind = "webshop"
    #: Bump when the loaded text changes (it keys the search-index cache): 2 = folded to ASCII at load.
    TEXT_VERSION = 2

    def __init__(self, data_dir: str | os.PathLike, num_products: int | None = None, human_goals: bool = True,
                 price_seed: int = 0) -> None:
        self.files = find_data_files(data_dir)
        with open(self.files["products"]) as f:
            raw_products = json.load(f)
        with open(self.files["attributes"]) as f:
            attributes = json.load(f)
        human = {}
        if self.files["human"] is not None:
            with open(self.files["human"]) as f:
                human = json.load(f)
        elif human_goals:
            raise FileNotFoundError(f"{HUMAN_INSTRUCTION_FILE} is missing from {str(self.files['products'].parent)!r};"
                                    " add it, or pass human_goals=False for WebShop's synthetic goals")
        reviews: dict[str, Any] = {}
        ratings: dict[str, Any] = {}
        if self.files["reviews"] is not None:
            with open(self.files["reviews"]) as f:
                for r in json.load(f):
                    reviews[r["asin"]] = r.get("reviews", [])
                    ratings[r["asin"]] = r.get("average_rating", "N.A.")
        if num_products is not None:
            raw_products = raw_products[:num_products]

        rnd = random.Random(price_seed)
        self.products: list[Product] = []
        seen: set[str] = set()
        for p in raw_products:
            asin = p.get("asin")
            if not isinstance(asin, str) or asin == "nan" or len(asin) > 10 or asin in seen:
                continue
            seen.add(asin)
            pricing, price_tag = _parse_pricing(p.get("pricing"))
            price = pricing[0] if len(pricing) == 1 else rnd.uniform(*pricing[:2])
            options: dict[str, list[str]] = {}
            for name, contents in (p.get("customization_options") or {}).items():
                if contents is None:
                    continue
                options[to_ascii_key(name.lower()).lower()] = [
                    to_ascii_key(c["value"].strip().replace("/", " | ").lower()).lower() for c in contents]
            ins = attributes.get(asin, {})
            bullets = p.get("small_description") or []
            bullets = bullets if isinstance(bullets, list) else [bullets]
            product_reviews = []
            for r in reviews.get(asin, []):
                product_reviews.append({"title": to_ascii(str(r.get("title", ""))),
                                        "score": r.get("score", r.get("stars", "")),
                                        "body": to_ascii(str(r.get("body", r.get("review", ""))))})
            name = to_ascii(p.get("name", "") or "")
            extra: dict[str, Any] = {"name": name, "pricing": pricing}
            if human_goals:
                if asin in human:
                    extra["instructions"] = human[asin]
            else:
                extra["instruction_text"] = ins.get("instruction")
                extra["instruction_attributes"] = ins.get("instruction_attributes")
            rating = ratings.get(asin, "N.A.")
            self.products.append(Product(
                asin=asin, title=name, description=to_ascii(p.get("full_description", "") or ""),
                bullets=[to_ascii(b) for b in bullets if isinstance(b, str)], reviews=product_reviews,
                rating=to_ascii(rating) if isinstance(rating, str) else rating, price=float(price),
                price_tag=price_tag, attributes=[to_ascii_key(a) for a in ins.get("attributes") or []] or ["DUMMY_ATTR"],
                options=options,
                query=str(p.get("query", "")).lower().strip(), category=p.get("category", ""),
                product_category=p.get("product_category", ""), extra=extra,
            ))
        if not self.products:
            raise ValueError(f"no usable product in {str(self.files['products'])!r}")
        self._asin_to_index = {p.asin: i for i, p in enumerate(self.products)}

    def __len__(self) -> int:
        return len(self.products)

    def product(self, index: int) -> Product:
        return self.products[int(index)]

    def index_of(self, asin: str) -> int | None:
        return self._asin_to_index.get(asin.upper(), self._asin_to_index.get(asin))

    def fingerprint(self) -> str:
        """Identifies the data files (path, size, modification time) for the search-index cache."""
        parts = []
        for key in ("products", "attributes"):
            path = self.files[key]
            stat = path.stat()
            parts.append(f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}")
        return "|".join(parts)
