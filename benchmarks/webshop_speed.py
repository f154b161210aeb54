"""Speed of ``hiergym/WebShop-v0``: catalog and index build, load, reset, search steps and click steps.

For each catalog size (10k and 100k products by default) this builds the shop from scratch in a temporary
cache folder and reports, in one process:

- ``generate``: drawing the catalog (vectorised numpy);
- ``index``: rendering every product's indexed text and building the bm25s index;
- ``load``: reading catalog and index back from the disk cache (what a new process pays), and the index's
  size on disk;
- ``memory``: what the loaded shop holds (traced Python and numpy allocations), and ``build peak``: the peak
  of the same during an index build (a separate traced run; the build time is measured untraced);
- ``reset``: ms per ``env.reset(seed=...)``;
- ``search``: steps per second of ``search[...]`` actions (the instruction's words as the query, as an agent
  would type them; every query new), and ``(repeat)``: the same query typed again, as the rollouts of one
  task often do, answered from the shop's cache of recent results;
- ``click``: steps per second of ``click[...]`` actions (results pages, item pages, options, sub-pages,
  previous/next: a fixed tour of clicks an agent makes);
- ``expert``: expert episodes per second (reset, plan and play to the purchase);
- simple agents' mean reward and success on 200 ``eval_in`` goals (see :func:`heuristic_agents`), to show
  how much searching and reading matter.

    python -m hiergym.benchmarks.webshop_speed                  # 10k and 100k products
    python -m hiergym.benchmarks.webshop_speed --sizes 10000 --steps 2000
"""

from __future__ import annotations

import argparse
import gc
import re
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hiergym.envs.webshop.catalog import GeneratedCatalog
from hiergym.envs.webshop.env import WebShopEnv, load_shop
from hiergym.envs.webshop.search import SearchIndex


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def time_search_steps(env: WebShopEnv, steps: int, repeat: bool) -> float:
    """Search steps per second: every query new (``repeat=False``), or typed a second time (cached results)."""
    timed, elapsed, seed = 0, 0.0, 0
    while timed < steps:
        _, info = env.reset(seed=seed)
        seed += 1
        # the instruction's words; a word outside the vocabulary makes each query new to the results cache
        query = info["task"].split(", and price")[0] + ("" if repeat else f" item{seed}")
        if repeat:  # an untimed first search fills the cache
            env.step(f"search[{query}]")
            env.step("click[back to search]")
        start = time.perf_counter()
        env.step(f"search[{query}]")
        elapsed += time.perf_counter() - start
        timed += 1
        env.step("click[back to search]")
    return timed / elapsed


def time_click_steps(env: WebShopEnv, steps: int) -> float:
    timed, elapsed, seed = 0, 0.0, 0
    while timed < steps:
        _, info = env.reset(seed=seed)
        seed += 1
        _, _, _, _, info = env.step(f"search[{info['task'].split(' with ')[0]}]")
        asins = [a for a in info["admissible_actions"] if a.startswith("click[b0")]
        if not asins:
            continue
        product = env.catalog.product(env.catalog.index_of(asins[0][len("click["):-1]))
        options = [f"click[{values[-1]}]" for values in product.options.values()]
        tour = ["click[next >]", "click[< prev]", asins[0], *options, "click[features]", "click[< prev]",
                "click[description]", "click[< prev]", "click[reviews]", "click[< prev]", "click[< prev]"]
        for action in tour:
            start = time.perf_counter()
            _, _, _, _, info = env.step(action)
            elapsed += time.perf_counter() - start
            timed += 1
            assert info["action_valid"], action
    return timed / elapsed


def time_resets(env: WebShopEnv, n: int) -> float:
    start = time.perf_counter()
    for seed in range(n):
        env.reset(seed=seed)
    return (time.perf_counter() - start) / n * 1000


def time_expert(env: WebShopEnv, n: int) -> tuple[float, float]:
    start, won = time.perf_counter(), 0
    for seed in range(n):
        env.reset(seed=seed)
        for action in env.expert_plan() or []:
            _, _, _, _, info = env.step(action)
        won += info["won"]
    return n / (time.perf_counter() - start), won / n


def _results(observation: str) -> list[tuple[str, float]]:
    """(asin, price) of the products on a results page, read from the text observation."""
    parts = observation.split(" [SEP] ")
    return [(p.lower(), float(parts[i + 2].lstrip("$").split()[0])) for i, p in enumerate(parts)
            if re.fullmatch(r"B0[0-9A-Z]{8}", p) and i + 2 < len(parts)]


def heuristic_agents(env: WebShopEnv, episodes: int) -> dict[str, tuple[float, float]]:
    """(mean reward, success rate) of simple agents, to show how much searching and reading matter.

    - ``rule``: WebShop's rule baseline: search the instruction, click the first result, buy.
    - ``budget+options``: search the instruction (without the price clause), open the first result within the
      price bound (prices show on the results page), click the instruction's option values, buy; it never
      reads a product's features.
    - ``expert``: :meth:`WebShopEnv.expert_plan`.
    """
    scores: dict[str, list[tuple[float, bool]]] = {"rule": [], "budget+options": [], "expert": []}
    for seed in range(episodes):
        for name in scores:
            _, info = env.reset(seed=seed, options={"split": "eval_in"})
            goal, reward = info["goal"], 0.0
            if name == "expert":
                actions = env.expert_plan() or []
                for action in actions:
                    _, reward, _, _, info = env.step(action)
            else:
                query = info["task"] if name == "rule" else info["task"].split(", and price")[0]
                obs, _, _, _, info = env.step(f"search[{query}]")
                results = _results(obs)
                if name == "budget+options":
                    results = [r for r in results if r[1] <= goal["price_upper"]]
                if results:
                    _, _, _, _, info = env.step(f"click[{results[0][0]}]")
                    if name == "budget+options":
                        for value in goal["goal_options"].values():
                            if f"click[{value}]" in info["admissible_actions"]:
                                env.step(f"click[{value}]")
                    _, reward, _, _, info = env.step("click[buy now]")
            scores[name].append((float(reward), bool(info["won"])))
    return {name: (sum(r for r, _ in v) / len(v), sum(w for _, w in v) / len(v)) for name, v in scores.items()}


def bench_size(size: int, steps: int, cache_root: Path) -> dict[str, Any]:
    cache = cache_root / f"n{size}"
    row: dict[str, Any] = {"size": size}
    start = time.perf_counter()
    catalog = GeneratedCatalog.generate(0, size)
    row["generate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    SearchIndex.build(catalog.documents())
    row["index_s"] = time.perf_counter() - start
    # peak memory of a build (Python and numpy allocations, traced: a separate, slower run)
    gc.collect()
    tracemalloc.start()
    SearchIndex.build(catalog.documents())
    row["build_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del catalog
    load_shop(catalog_seed=0, num_products=size, cache_dir=str(cache))  # build and write the disk cache
    load_shop.cache_clear()
    gc.collect()
    start = time.perf_counter()
    load_shop(catalog_seed=0, num_products=size, cache_dir=str(cache))
    row["load_s"] = time.perf_counter() - start
    load_shop.cache_clear()
    gc.collect()
    tracemalloc.start()
    load_shop(catalog_seed=0, num_products=size, cache_dir=str(cache))
    row["memory_mib"] = tracemalloc.get_traced_memory()[0] / 2**20  # what the loaded shop holds
    tracemalloc.stop()
    row["disk_mib"] = folder_mib(cache)
    env = WebShopEnv(num_products=size, cache_dir=str(cache))
    row["reset_ms"] = time_resets(env, 500)
    row["search_sps"] = time_search_steps(env, steps, repeat=False)
    row["repeat_sps"] = time_search_steps(env, steps, repeat=True)
    row["click_sps"] = time_click_steps(env, steps)
    row["expert_eps"], row["expert_success"] = time_expert(env, 200)
    row["agents"] = heuristic_agents(env, 200)
    load_shop.cache_clear()
    return row


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="catalog sizes")
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per kind (search, click)")
    args = parser.parse_args(argv)
    cache_root = Path(tempfile.mkdtemp(prefix="webshop-bench-"))
    try:
        rows = [bench_size(size, args.steps, cache_root) for size in args.sizes]
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    header = (f"{'products':>9} {'generate':>9} {'index':>8} {'build peak':>10} {'load':>7} {'memory':>9} {'disk':>8} "
              f"{'reset':>8} "
              f"{'search/s':>9} {'(repeat)':>9} {'click/s':>9} {'expert ep/s':>11} {'won':>5}")
    print(header)
    for r in rows:
        print(f"{r['size']:>9,} {r['generate_s']:>8.2f}s {r['index_s']:>7.1f}s {r['build_peak_mib']:>7.0f}MiB "
              f"{r['load_s']:>6.2f}s "
              f"{r['memory_mib']:>6.0f}MiB {r['disk_mib']:>5.0f}MiB {r['reset_ms']:>6.2f}ms {r['search_sps']:>9,.0f} {r['repeat_sps']:>9,.0f} "
              f"{r['click_sps']:>9,.0f} {r['expert_eps']:>11,.0f} {r['expert_success']:>5.0%}")
    print("\nsimple agents on 200 eval_in goals (mean reward / success):")
    for r in rows:
        agents = ", ".join(f"{name} {score:.2f} / {won:.0%}" for name, (score, won) in r["agents"].items())
        print(f"{r['size']:>9,}: {agents}")


if __name__ == "__main__":
    main()
