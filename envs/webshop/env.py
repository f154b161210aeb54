"""``hiergym/WebShop-v0``: WebShop's shopping task, with its pages, actions and reward, offline and fast.

The agent reads an instruction ("i need a clip-in hair extension which is natural looking with color: black,
and size: 18 inch, and price lower than 50.00 dollars"), searches a catalog, opens products, reads their
description, features and reviews, picks options and buys one product.

Observation
    WebShop's text mode: the visible texts of the current page joined by ``" [SEP] "`` (see
    :mod:`hiergym.envs.webshop.pages` for every page's layout). Printable ASCII, at most 65,536 characters.
Action
    WebShop's syntax: ``search[<query>]`` on the search page, ``click[<clickable>]`` with one of the page's
    clickables: ``back to search``, ``next >``, ``< prev``, a product's asin (``b0...``), an option value,
    ``description``, ``features``, ``reviews``, ``buy now``. Case and surrounding spaces are forgiven.
    ``info["admissible_actions"]`` lists every ``click[...]`` the page accepts, plus the literal
    ``search[<query>]`` when the search box is present (replace ``<query>`` by the words to search);
    ``info["available_actions"]`` is WebShop's own ``get_available_actions()`` dict
    (``{"has_search_bar": bool, "clickables": [...]}``).
    An action that is not one of these (an unknown button, ``click[search]``, a malformed ``search[``, an
    empty query, a search away from the search page, anything that is not text) changes nothing: the same
    page is observed again, as in WebShop, and ``info["action_valid"]`` is False.
Reward
    0 on every step but the purchase; ``click[buy now]`` gives WebShop's reward for the purchased product, its
    price and the selected options (:func:`hiergym.envs.webshop.reward.get_reward`), in [0, 1].
    ``info["won"]`` is True when the reward is 1 (WebShop's success).
Episode end
    Terminates on ``buy now``; truncated at ``max_episode_steps=15`` by the registered TimeLimit.
Arguments
    ``num_products`` (None: 10,000) and ``catalog_seed`` (0): the generated catalog; ``data_dir``: a folder
    with WebShop's own ``items_shuffle*.json`` / ``items_ins_v2*.json`` / ``items_human_ins.json`` (default:
    the ``WEBSHOP_DATA`` environment variable; unset means the generated catalog), in which case
    ``num_products`` keeps the first N products as WebShop's ``num_products`` does (None: all); ``human_goals`` (True): WebShop's
    human instructions, or its synthetic ones; ``cache_dir``: where catalogs and search indices are cached
    (default ``$HIERGYM_CACHE/webshop`` or ``~/.cache/hiergym/webshop``); ``expert_knowledge``: what
    :meth:`~WebShopEnv.expert_plan` may know: ``"full"`` (default; the goal's target and hidden attributes, so it
    buys a product scoring 1) or ``"observed"`` (the page only: :mod:`hiergym.envs.webshop.shopper`, a shopper
    a clone can imitate; 71.5% success on ``eval_in``).
Reset options
    ``split`` (``train`` / ``eval_in`` / ``eval_out``) and ``task_id`` as in the contract; ``eval_out`` goals
    target product types never targeted in ``train`` (generated catalog) or WebShop's validation goals (real
    data). ``info["goal"]`` holds the goal: ``asin`` (the target), ``attributes``, ``goal_options``,
    ``price_upper``, ``instruction_text``, ``query``, ``category``, ``product_category``, ``name``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym

from hiergym.envs.core import (
    EpisodeEnd,
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.envs.webshop import pages as pg
from hiergym.envs.webshop.catalog import GENERATOR_VERSION, Catalog, GeneratedCatalog, WebShopDataCatalog
from hiergym.envs.webshop.goals import GeneratedGoals, WebShopDataGoals
from hiergym.envs.webshop.reward import (
    EXACT_MATCH_OPTS,
    fuzzy_score,
    get_reward,
    goal_option_values,
    normalize_color,
)
from hiergym.envs.webshop.search import INDEX_VERSION, SearchIndex
from hiergym.envs.webshop.shopper import shopper_action

ENV_ID = "hiergym/WebShop-v0"
DEFAULT_NUM_PRODUCTS = 10_000  # generated catalog size when num_products is not given
SEARCH_PLACEHOLDER = "search[<query>]"
#: What the expert may know (``expert_knowledge``): everything, or only the pages it has been shown.
EXPERT_KNOWLEDGE = ("full", "observed")
_OBSERVED_PLAN_LIMIT = 16  # a shopper's plan is a search, a click, the options and the purchase
MAX_OBSERVATION_CHARS = 65536
_ACTION = re.compile(r"(.+)\[(.+)\]")  # WebShop's parse_action
_PRICE_CLAUSE = re.compile(r",? and price lower than [0-9.]+ dollars")


def default_cache_dir() -> Path:
    root = os.environ.get("HIERGYM_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "hiergym") / "webshop"


#: A click on a product (its ASIN: B0 and 8 letters or digits, lower-cased in actions).
_PRODUCT_CLICK = re.compile(r"^click\[b0[a-z0-9]{8}\]$")


@dataclass
class Shop:
    """A catalog, its search index and its goals: everything the env reads, shared by every env instance."""

    catalog: Catalog
    index: SearchIndex
    goals: GeneratedGoals | WebShopDataGoals

    def __post_init__(self) -> None:
        # Rollouts of one task (a GRPO group) often type the same query: remember recent results.
        self._search = lru_cache(maxsize=4096)(lambda query: tuple(self.index.search(query)))

    def search(self, query: str) -> list[int]:
        return list(self._search(query))


def _atomic_build(final: Path, build: Any, is_complete: Any) -> None:
    """Build into a temporary folder beside ``final`` and move it in place, so readers never see half a cache."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_complete(final):  # another process finished it meanwhile
        return
    if final.exists():  # an incomplete cache (a file deleted by hand): rebuild it whole
        shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp", dir=final.parent))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: keep theirs
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=4)
def load_shop(catalog_seed: int = 0, num_products: int | None = 10_000, data_dir: str | None = None,
              human_goals: bool = True, cache_dir: str | None = None) -> Shop:
    """The shop for these arguments, from the in-process cache, the disk cache, or built (and cached)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if data_dir is not None:
        catalog = WebShopDataCatalog(data_dir, num_products=num_products, human_goals=human_goals)
        key = hashlib.sha1(f"{catalog.fingerprint()}|{num_products}|{INDEX_VERSION}|text{catalog.TEXT_VERSION}"
                           .encode()).hexdigest()[:16]
        folder = cache / f"webshop-data-{key}"

        def data_complete(path: Path) -> bool:
            return SearchIndex.exists(path / "index")

        if not data_complete(folder):
            _atomic_build(folder, lambda tmp: SearchIndex.build(catalog.documents()).save(tmp / "index"),
                          data_complete)
        return Shop(catalog, SearchIndex.load(folder / "index"), WebShopDataGoals(catalog, human_goals))

    if num_products is None or num_products < 1:
        raise ValueError(f"num_products must be a positive number of products, got {num_products!r}")
    folder = cache / f"generated-v{GENERATOR_VERSION}.{INDEX_VERSION}-seed{catalog_seed}-n{num_products}"

    def complete(path: Path) -> bool:
        return (path / "catalog.npz").is_file() and SearchIndex.exists(path / "index")

    def build(tmp: Path) -> None:
        generated = GeneratedCatalog.generate(catalog_seed, num_products)
        generated.save(tmp / "catalog.npz")
        SearchIndex.build(generated.documents()).save(tmp / "index")

    if not complete(folder):
        _atomic_build(folder, build, complete)
    catalog = GeneratedCatalog.load(folder / "catalog.npz")
    return Shop(catalog, SearchIndex.load(folder / "index"), GeneratedGoals(catalog))


class WebShopEnv(EpisodeEnd, gym.Env):
    __doc__ = __doc__
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, *, num_products: int | None = None, catalog_seed: int = 0,
                 data_dir: str | os.PathLike | None = None, human_goals: bool = True,
                 cache_dir: str | os.PathLike | None = None, expert_knowledge: str = "full") -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; choose 'ansi' or None")
        if expert_knowledge not in EXPERT_KNOWLEDGE:
            raise ValueError(f"unknown expert_knowledge {expert_knowledge!r} for {ENV_ID}; choose one of "
                             f"{', '.join(EXPERT_KNOWLEDGE)}")
        self.render_mode = render_mode
        self.expert_knowledge = expert_knowledge
        data_dir = data_dir if data_dir is not None else os.environ.get("WEBSHOP_DATA") or None
        if data_dir is None and num_products is None:
            num_products = DEFAULT_NUM_PRODUCTS
        # load_shop's arguments: a pickled env keeps these and loads the shop again (see __getstate__)
        self._shop_args = (int(catalog_seed), None if num_products is None else int(num_products),
                           None if data_dir is None else str(data_dir), bool(human_goals),
                           None if cache_dir is None else str(cache_dir))
        self.shop = load_shop(*self._shop_args)
        self.catalog = self.shop.catalog
        # generated text is printable ASCII with single spaces by construction; real data is folded to it
        self._clean_text = self.catalog.kind == "generated"
        self.observation_space = text_observation_space(MAX_OBSERVATION_CHARS)
        self.action_space = text_action_space()
        self._goal: dict[str, Any] = {}
        self._goal_id = 0
        self._goal_key = ""
        self._state = pg.PageState()
        self._elements: list[pg.Element] = []
        self._clickables: dict[str, str | None] = {}
        self._observation_text = ""
        self._won = False
        self._last_reward_info: dict[str, Any] | None = None
        self._expert_cache: tuple[str, dict[int, dict[str, str] | None]] | None = None

    # -- pickling --------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The env's own state, without the shop (catalog, search index with its native stemmer, caches).

        The shop is a pure function of the constructor's arguments, so a pickled (or ``copy.deepcopy``-ed) env
        loads it again with :func:`load_shop`: in the same process that is the one shared shop, elsewhere the
        disk cache. The page, goal, options and random generator travel, so the copy continues exactly as
        the original would.
        """
        state = self.__dict__.copy()
        del state["shop"], state["catalog"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.shop = load_shop(*self._shop_args)
        self.catalog = self.shop.catalog

    # -- gymnasium API -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, task_id, task_rng = select_task(ENV_ID, self.np_random, options)
        self._goal_id, goal = self.shop.goals.goal(split, task_id, task_rng)
        goal["instruction_text"] = pg.to_ascii(goal["instruction_text"])
        self._goal = goal
        self._goal_key = hashlib.sha1(json.dumps(goal, sort_keys=True).encode()).hexdigest()[:16]
        self._won = False
        self._last_reward_info = None
        self._set_state(pg.PageState())
        return self._observation(), self._info(action_valid=True)

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state.kind == "done":  # stepping past the purchase: nothing more can happen
            return self._observation(), 0.0, True, False, self._info(action_valid=False)
        parsed = self._parse(action)
        if parsed is None:
            return self._observation(), 0.0, False, False, self._info(action_valid=False)
        name, arg = parsed
        reward = 0.0
        if name == "search":
            self._search(arg)
        else:
            reward = self._click(arg)
        terminated = self._state.kind == "done"
        return self._observation(), reward, terminated, False, self._info(action_valid=True)

    def render(self) -> str:
        # The text page is the only view, so it is returned whatever the render mode (as the contract expects).
        return self._observation()

    # -- actions ---------------------------------------------------------------------------------------
    def _parse(self, action: Any, state: pg.PageState | None = None,
               clickables: dict[str, str | None] | None = None) -> tuple[str, str] | None:
        """``(name, argument)`` of a valid action on the current page (or on the page ``state`` with its
        ``clickables``), else None (WebShop's rules)."""
        state = self._state if state is None else state
        clickables = self._clickables if clickables is None else clickables
        text = normalize_action(action)
        if text is None:
            return None
        match = _ACTION.match(text)
        if match is None:
            return None
        name, arg = match.group(1).strip(), match.group(2).strip()
        if name == "search":
            return (name, arg) if arg and state.kind == "search" else None
        if name == "click" and arg in clickables and arg != "search":
            return name, arg
        return None

    def _search(self, query: str) -> None:
        self._set_state(self._searched(query))

    def _searched(self, query: str) -> pg.PageState:
        keywords = tuple(query.split(" "))  # WebShop keeps the query as its words
        return pg.PageState("results", keywords, 1, tuple(self.shop.search(" ".join(keywords))))

    def _click(self, clickable: str) -> float:
        if clickable == pg.END_BUTTON.lower():
            return self._buy()
        self._set_state(self._clicked(self._state, clickable, self._clickables))
        return 0.0

    def _clicked(self, state: pg.PageState, clickable: str, clickables: dict[str, str | None]) -> pg.PageState:
        """The page a click on ``clickable`` (one of ``clickables``, the page's) leads to from ``state``."""
        back, nxt, prev = pg.BACK_TO_SEARCH.lower(), pg.NEXT_PAGE.lower(), pg.PREV_PAGE.lower()
        if clickable == back:
            return pg.PageState()
        if clickable == nxt and state.kind == "results":
            return pg.PageState("results", state.keywords, state.page + 1, state.results)
        if clickable == prev and state.kind == "results":
            return pg.PageState("results", state.keywords, state.page - 1, state.results)
        if clickable == prev and state.kind == "sub":
            return pg.PageState("item", state.keywords, state.page, state.results, state.item, dict(state.options))
        if clickable == prev and state.kind == "item":
            # WebShop re-runs the search: back on the results page, the options are forgotten
            return pg.PageState("results", state.keywords, state.page, state.results)
        if clickable in (s.lower() for s in pg.SUB_PAGES):
            return pg.PageState("sub", state.keywords, state.page, state.results, state.item, dict(state.options),
                                clickable)
        if state.kind == "results":  # a product link
            return pg.PageState("item", state.keywords, state.page, state.results, self.catalog.index_of(clickable),
                                {})
        options = dict(state.options)  # an option value on the item page
        options[clickables[clickable]] = clickable
        return pg.PageState("item", state.keywords, state.page, state.results, state.item, options)

    def _buy(self) -> float:
        state = self._state
        product = self.catalog.product(state.item)
        reward, info = get_reward(product, self._goal, product.price, state.options)
        self._last_reward_info = {**info, "asin": product.asin, "options": dict(state.options),
                                  "price": product.price}
        self._won = reward >= 1.0 - 1e-9
        done = state.copy()
        done.kind, done.reward = "done", reward
        self._set_state(done)
        return reward

    # -- observation and info --------------------------------------------------------------------------
    def _set_state(self, state: pg.PageState) -> None:
        self._state = state
        self._elements = pg.page_elements(state, self.catalog, self._goal.get("instruction_text", ""))
        self._clickables = pg.clickables(self._elements, clean=self._clean_text)
        self._observation_text = pg.observation_text(self._elements, clean=self._clean_text)[:MAX_OBSERVATION_CHARS]

    def _observation(self) -> str:
        return self._observation_text

    def admissible_actions(self) -> list[str]:
        actions = [SEARCH_PLACEHOLDER] if self._state.kind == "search" else []
        return actions + [f"click[{c}]" for c in self._clickables if c != "search"]

    def available_actions(self) -> dict[str, Any]:
        """WebShop's ``get_available_actions()``: whether a search box is shown, and the clickables."""
        return {"has_search_bar": self._state.kind == "search", "clickables": list(self._clickables)}

    def state_key(self) -> str:
        s = self._state
        item = self.catalog.asin(s.item) if s.item is not None else "-"
        options = ",".join(f"{k}={v}" for k, v in sorted(s.options.items()))
        return (f"goal={self._goal_key}|page={s.kind}|query={' '.join(s.keywords)}|n={s.page}|item={item}"
                f"|options={options}|sub={s.sub_page or '-'}")

    def _info(self, action_valid: bool) -> dict[str, Any]:
        # copies: users keep infos, and one step's info must not change with the next
        extra: dict[str, Any] = {"goal": _copy_goal(self._goal), "available_actions": self.available_actions(),
                                 "page": self._state.kind}
        if self._last_reward_info is not None:
            extra["reward_info"] = copy.deepcopy(self._last_reward_info)
        return make_info(task=self._goal.get("instruction_text", ""), admissible_actions=self.admissible_actions(),
                         won=self._won, action_valid=action_valid, state_key=self.state_key(), **extra)

    # -- expert ------------------------------------------------------------------------------------------
    def _option_choice(self, index: int) -> dict[str, str]:
        """Option values to select on product ``index`` for the goal: per option, one matching a goal option."""
        goal_options = [normalize_color(o) for o in goal_option_values(self._goal)]
        choice: dict[str, str] = {}
        for name, values in self.catalog.product(index).options.items():
            for value in values:
                v = normalize_color(value)
                exact = name.lower() in EXACT_MATCH_OPTS
                if (v in goal_options) if exact else any(fuzzy_score(g, v) > 85 for g in goal_options):
                    choice[name] = value
                    break
        return choice

    def _winning_choice(self, index: int) -> dict[str, str] | None:
        """The options that make buying product ``index`` score 1 for the goal, or None (memoised per goal)."""
        if self._expert_cache is None or self._expert_cache[0] != self._goal_key:
            self._expert_cache = (self._goal_key, {})
        memo = self._expert_cache[1]
        if index not in memo:
            choice = self._option_choice(index)
            product = self.catalog.product(index)
            reward, _ = get_reward(product, self._goal, product.price, choice)
            memo[index] = choice if reward >= 1.0 - 1e-9 and self._clicks_select(index, choice) else None
        return memo[index]

    def _winning_purchases(self) -> list[tuple[int, dict[str, str]]]:
        """Products (target first, then those a search for the target's title finds) that score 1, with options."""
        target = self.catalog.index_of(self._goal["asin"])
        if target is None:
            return []
        candidates = [target] + [i for i in self.shop.search(_query_for(self.catalog.product(target).title))
                                 if i != target]
        return [(i, choice) for i in candidates if (choice := self._winning_choice(i)) is not None]

    def _clicks_select(self, index: int, choice: dict[str, str]) -> bool:
        """Whether clicking the chosen values sets those options (a value shared by two options sets the last)."""
        owner: dict[str, str] = {}
        for name, values in self.catalog.product(index).options.items():
            for value in values:
                owner[value] = name
        return all(owner.get(value) == name for name, value in choice.items())

    def _finish_on_item(self, index: int, choice: dict[str, str], current: dict[str, str]) -> list[str] | None:
        """Clicks that complete a purchase of ``index`` from its item page, or None if it would not score 1."""
        product = self.catalog.product(index)
        final = {**current, **choice}
        reward, _ = get_reward(product, self._goal, product.price, final)
        if reward < 1.0 - 1e-9:
            return None
        return [f"click[{value}]" for name, value in choice.items() if current.get(name) != value] + ["click[buy now]"]

    def expert_subgoals(self) -> list[tuple[str, list[str]]] | None:
        """The expert's plan as a shopper's subgoals, for a hierarchical agent's demonstrations: the search
        (named by its query), opening a product (named by the click), then choosing its options and buying
        ("buy it"). With ``expert_knowledge="observed"`` the first two are named by what a planner knows before
        the page is shown: "search" and "open a product" (which one is the executor's to read)."""
        plan = self.expert_plan()
        if not plan:
            return None
        observed = self.expert_knowledge == "observed"
        subgoals: list[tuple[str, list[str]]] = []
        rest = list(plan)
        while rest:
            action = rest[0]
            if action.startswith("search[") or _PRODUCT_CLICK.match(action) or action in (
                    "click[back to search]", "click[< prev]", "click[next >]"):
                steps = [rest.pop(0)]
                name = steps[0]
                if observed and action.startswith("search["):
                    name = "search"
                elif observed and _PRODUCT_CLICK.match(action):
                    name = "open a product"
                subgoals.append((name, steps))
            else:  # options and the purchase
                subgoals.append(("buy it", rest))
                rest = []
        return subgoals

    def expert_plan(self) -> list[str] | None:
        """Actions that buy a product with reward 1 from the current state, or None if none is known; with
        ``expert_knowledge="observed"``, what the page-reading shopper does from here (:meth:`_observed_plan`).

        Finishes on the current item page when its product can score 1; otherwise clicks a winning product on
        the current results page; otherwise goes back to search, searches with the instruction's words (as a
        shopper would) and takes the first winning result, paging to it; if none is found that way, it searches
        for a winning product's title. Winning products are checked with the reward itself; the candidates
        are the search results, the goal's target and what a search for the target's title returns.
        """
        state = self._state
        if state.kind == "done":
            return None
        if self.expert_knowledge == "observed":
            return self._observed_plan()
        if state.kind in ("item", "sub") and (choice := self._winning_choice(state.item)) is not None:
            finish = self._finish_on_item(state.item, choice, state.options)
            if finish is not None:
                return (["click[< prev]"] if state.kind == "sub" else []) + finish
        if state.kind == "results":
            start = (state.page - 1) * pg.PRODUCT_WINDOW
            for index in state.results[start:start + pg.PRODUCT_WINDOW]:
                choice = self._winning_choice(index)
                finish = self._finish_on_item(index, choice, {}) if choice is not None else None
                if finish is not None:
                    return [f"click[{self.catalog.asin(index).lower()}]"] + finish
        # Search like a shopper first (the instruction's words), then for a winning product's title.
        prefix = [] if state.kind == "search" else ["click[back to search]"]
        natural = _query_for(_PRICE_CLAUSE.sub("", self._goal["instruction_text"]))
        titles = (_query_for(self.catalog.product(index).title) for index, _ in self._winning_purchases())
        for query in itertools.chain([natural], titles):  # titles are only looked at if needed
            for position, index in enumerate(self.shop.search(query)):
                choice = self._winning_choice(index)
                finish = self._finish_on_item(index, choice, {}) if choice is not None else None
                if finish is not None:
                    pages = position // pg.PRODUCT_WINDOW
                    return (prefix + [f"search[{query}]"] + ["click[next >]"] * pages
                            + [f"click[{self.catalog.asin(index).lower()}]"] + finish)
        return None


    def _observed_plan(self) -> list[str] | None:
        """The shopper's actions from the current page to a purchase: each decided from the page it will be on
        (:func:`~hiergym.envs.webshop.shopper.shopper_action`), the pages followed with the env's own moves."""
        state, elements, clickables = self._state, self._elements, self._clickables
        instruction = self._goal.get("instruction_text", "")
        plan: list[str] = []
        while len(plan) < _OBSERVED_PLAN_LIMIT:
            action = shopper_action(elements, state.kind, clickables)
            parsed = self._parse(action, state, clickables) if action is not None else None
            if parsed is None:
                return None  # no purchase ahead (a search that found nothing), or nothing the env would take
            name, arg = parsed
            plan.append(action)
            if name == "click" and arg == pg.END_BUTTON.lower():
                return plan
            state = self._searched(arg) if name == "search" else self._clicked(state, arg, clickables)
            elements = pg.page_elements(state, self.catalog, instruction)
            clickables = pg.clickables(elements, clean=self._clean_text)
        return None  # no purchase within the limit


def _copy_goal(goal: dict[str, Any]) -> dict[str, Any]:
    """A copy of a goal deep enough that no list or dict is shared (faster than ``copy.deepcopy``)."""
    return {k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v for k, v in goal.items()}


def _query_for(title: str) -> str:
    """A search query for a title: its words, lower-cased, without the brackets the action syntax uses."""
    words = re.sub(r"[^a-z0-9 ]+", " ", pg.to_ascii(title).lower()).split()
    return " ".join(words[:30]) or "product"
