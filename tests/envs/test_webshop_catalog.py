"""The generated catalog, its vocabulary, the bm25s search and the on-disk cache."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from hiergym.envs.webshop import taxonomy as tx
from hiergym.envs.webshop.catalog import GeneratedCatalog
from hiergym.envs.webshop.env import default_cache_dir, load_shop
from hiergym.envs.webshop.reward import fuzzy_score, normalize_color
from hiergym.envs.webshop.search import SEARCH_RETURN_N, SearchIndex, top_k


@pytest.fixture(scope="module")
def catalog() -> GeneratedCatalog:
    return GeneratedCatalog.generate(seed=0, size=2000)


def test_generation_is_deterministic(catalog: GeneratedCatalog) -> None:
    again = GeneratedCatalog.generate(seed=0, size=2000)
    for name in GeneratedCatalog.COLUMNS:
        assert np.array_equal(getattr(catalog, name), getattr(again, name)), name
    assert catalog.product(17) == again.product(17)
    other = GeneratedCatalog.generate(seed=1, size=2000)
    assert not np.array_equal(catalog.type_id, other.type_id)


def test_products_look_like_webshop_products(catalog: GeneratedCatalog) -> None:
    asins = [catalog.asin(i) for i in range(len(catalog))]
    assert len(set(asins)) == len(asins) and all(re.fullmatch(r"B0[0-9A-Z]{8}", a) for a in asins)
    assert set(catalog.type_id.tolist()) == set(range(len(tx.PRODUCT_TYPES)))
    for i in range(0, len(catalog), 97):
        p = catalog.product(i)
        assert catalog.index_of(p.asin) == i and catalog.index_of(p.asin.lower()) == i
        assert p.title.isascii() and p.description and len(p.bullets) >= 4
        assert 2 <= len(p.attributes) <= 4 and p.options and all(len(v) >= 2 for v in p.options.values())
        assert p.price > 0 and p.price_tag == f"${p.price}"
        assert p.product_category.count("\u203a") >= 2 and p.query and p.category in tx.CATEGORIES
        # every attribute can be read on the page: in the bullet points (the Features page)
        assert all(a in " ".join(p.bullets).lower() for a in p.attributes)
        assert p.document() == " ".join([p.title, p.description, p.bullets[0], p.option_text()]).lower()
        # printable ASCII with single spaces, as the env's fast page rendering assumes (clean=True)
        texts = [p.title, p.description, p.price_tag, str(p.rating), *p.bullets,
                 *(str(v) for r in p.reviews for v in r.values()), *p.options, *sum(p.options.values(), [])]
        assert all(t.isascii() and t.isprintable() and " ".join(t.split()) == t for t in texts)


def test_families_share_attributes(catalog: GeneratedCatalog) -> None:
    sizes = np.bincount(catalog.family)
    assert (sizes >= 2).sum() > len(sizes) // 3
    family = int(np.flatnonzero(sizes >= 3)[0])
    members = np.flatnonzero(catalog.family == family)
    products = [catalog.product(i) for i in members]
    assert len({p.title for p in products}) == len(products)  # different brands
    assert all(p.attributes == products[0].attributes and p.query == products[0].query for p in products)
    # options are drawn per product (most of the type's values), so option text does not reveal the family
    assert len({str(catalog.product(i).options) for i in range(50)}) > 25


def test_vocabulary_separates_right_from_wrong(catalog: GeneratedCatalog) -> None:
    """No two attributes or option values of a type are a WebShop fuzzy match, and text never leaks one."""
    for t in tx.PRODUCT_TYPES:
        for a, b in itertools.combinations(t.attributes, 2):
            assert fuzzy_score(a, b) <= 85, (t.query, a, b)
        for name, values in t.options.items():
            for a, b in itertools.combinations([normalize_color(v) for v in values], 2):
                assert (a != b) if name == "size" else fuzzy_score(a, b) <= 85, (t.query, name, a, b)
    for i in range(len(catalog)):
        p, t = catalog.product(i), catalog.product_type(i)
        text = " ".join([p.title, p.description, *p.bullets]).lower()
        for attribute in set(t.attributes) - set(p.attributes):
            assert attribute not in text, (p.asin, attribute)
        for value in itertools.chain.from_iterable(t.options.values()):
            assert normalize_color(value) not in text, (p.asin, value)


def test_large_catalogs_generate_quickly() -> None:
    big = GeneratedCatalog.generate(seed=0, size=100_000)
    assert len(big) == 100_000 and len(set(big.asin_code.tolist())) == 100_000
    assert big.product(99_999).asin == big.asin(99_999)


def test_search_ranks_relevant_products(catalog: GeneratedCatalog) -> None:
    index = SearchIndex.build(catalog.documents())
    results = index.search("clip-in hair extensions")
    assert len(results) == SEARCH_RETURN_N
    assert all(catalog.product(i).query == "hair extensions" for i in results[:10])
    assert index.search("the of and") == [] and index.search("zzzqqq") == []
    few = index.search("hyaluronic")  # only matching documents come back, as with Lucene
    assert 0 < len(few) <= SEARCH_RETURN_N and all("hyaluronic" in catalog.product(i).document() for i in few)
    title = catalog.product(5).title.lower()
    assert 5 in index.search(title)[:10]
    assert index.search(title) == index.search(title)  # deterministic, ties by catalog order
    # the dense rows for frequent tokens give bm25s's own scores, bit for bit
    assert len(index._dense_row) > 10
    for query in ("clip-in hair extensions color black", "gluten free protein bars with size 24 count", title):
        ids = [index._vocab[t] for t in index.tokenize(query) if t in index._vocab]
        assert np.array_equal(index.scores(ids), index.retriever.get_scores_from_ids(ids))


def test_shop_is_cached_on_disk_and_in_process(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIERGYM_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "webshop"
    shop = load_shop(catalog_seed=3, num_products=800)
    assert load_shop(catalog_seed=3, num_products=800) is shop  # in-process cache
    folders = list((tmp_path / "root" / "webshop").iterdir())
    assert len(folders) == 1 and "seed3-n800" in folders[0].name
    assert (folders[0] / "catalog.npz").is_file() and (folders[0] / "index" / "hiergym.json").is_file()
    load_shop.cache_clear()
    reloaded = load_shop(catalog_seed=3, num_products=800)
    assert reloaded is not shop and reloaded.catalog.product(10) == shop.catalog.product(10)
    assert reloaded.search("office chair") == shop.search("office chair")
    # a cache missing a file is rebuilt whole
    (folders[0] / "index" / "hiergym.json").unlink()
    load_shop.cache_clear()
    assert load_shop(catalog_seed=3, num_products=800).search("office chair") == shop.search("office chair")
    assert (folders[0] / "index" / "hiergym.json").is_file()
    with pytest.raises(ValueError, match="num_products"):
        load_shop(num_products=0, cache_dir=str(tmp_path))


def test_top_k_is_exact_with_ties() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, k = int(rng.integers(1, 3000)), int(rng.integers(1, 60))
        scores = rng.choice([0.0, 0.0, 0.5, 1.0, 2.0], size=n).astype(np.float32) if trial % 2 else \
            (rng.random(n) * (rng.random(n) < 0.3)).astype(np.float32)
        positive = np.flatnonzero(scores > 0)
        expected = positive[np.lexsort((positive, -scores[positive]))][:k]
        assert np.array_equal(top_k(scores, k), expected)
