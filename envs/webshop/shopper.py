"""A shopper that decides from the page alone: WebShop's expert for ``expert_knowledge="observed"``.

The full-knowledge expert (:meth:`WebShopEnv.expert_plan`) clicks the product that the reward says wins, which
the page does not show (the goal's hidden attributes and target): a clone of it can only guess which result to
open. This shopper reads what a person sees, one page at a time, and never remembers:

- search page: ``search[<the instruction>]``, the instruction as written (shorter queries find the product
  far less often: measured with an earlier product choice, the words before "with" alone gave 18% success
  instead of 56% on ``eval_in``);
- results page: the first product on this page (the search's best match) priced under the instruction's bound,
  the first of all when none is (choosing instead the title sharing the most words with the instruction gives
  56% success instead of 71.5%: the search ranks better than word overlap);
- item page: for each option group, the value the instruction names (``color: coral``, else a value that
  appears in the instruction's text), clicked if not yet selected; then ``buy now``;
- description, features and reviews pages: ``< prev``.

Memoryless and loop-free: what it does on a page depends on that page only, and every page leads one step
closer to a purchase. Measured on the generated catalog (200 tasks, ``eval_in``): 71.5% success, mean score
0.94; the full-knowledge expert 100% (docs/webshop.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hiergym.envs.webshop import pages as pg

_PRICE_BOUND = re.compile(r"price lower than ([0-9][0-9,]*(?:\.[0-9]+)?) dollars")
#: ``name: value`` pairs of WebShop's synthetic option wording (" with color: coral, and size: small").
_NAMED_OPTION = re.compile(r"(?:with|and) ([a-z]+(?: [a-z]+)?): ([^,]+?)(?=,|$)")


def price_bound(instruction: str) -> float | None:
    """The instruction's "price lower than X dollars", or None."""
    match = _PRICE_BOUND.search(instruction.lower())
    return float(match.group(1).replace(",", "")) if match else None


def named_options(instruction: str) -> dict[str, str]:
    """Option values the instruction names as ``name: value`` (WebShop's synthetic wording)."""
    text = _PRICE_BOUND.sub("", instruction.lower())
    return {name: value.strip() for name, value in _NAMED_OPTION.findall(text)}


def _price(tag: str) -> float | None:
    """``"$34.99"`` -> 34.99; a range (``"$10.0 to $12.0"``) reads as its upper end (the price may be drawn
    anywhere in it); None if unreadable."""
    prices = re.findall(r"\$([0-9][0-9,]*(?:\.[0-9]+)?)", tag)
    return float(prices[-1].replace(",", "")) if prices else None


def choose_product(instruction: str, products: Sequence[tuple[str, str, str]]) -> str | None:
    """The asin to open among a results page's ``(asin, title, price tag)``: the first (the search's best
    match) priced under the instruction's bound, the first of all when none is; None on an empty page."""
    if not products:
        return None
    bound = price_bound(instruction)
    affordable = [p for p in products if bound is None or ((price := _price(p[2])) is not None and price < bound)]
    return (affordable or list(products))[0][0]


def choose_options(instruction: str, groups: dict[str, list[str]], selected: dict[str, str],
                   owners: dict[str, str | None] | None = None) -> list[str]:
    """Option values to click on an item page (``groups``: option name -> values shown), in page order.

    ``owners`` (the page's clickables: lower-cased value -> the option a click sets) leaves out values a click
    cannot select for their group (a value shown in two groups sets the later one, as in WebShop) and values
    no action can name (brackets)."""
    named = named_options(instruction)
    text = f" {instruction.lower()} "
    clicks = []
    for name, shown in groups.items():
        values = [v for v in shown if "[" not in v and "]" not in v
                  and (owners is None or owners.get(v.lower()) == name)]
        want = named.get(name.lower())
        choice = next((v for v in values if want is not None and v.lower() == want), None)
        if choice is None:  # a value the instruction mentions anywhere, the longest first ("x-large" over "large")
            mentioned = [v for v in values if f" {v.lower()}" in text or f"{v.lower()} " in text]
            choice = max(mentioned, key=len) if mentioned else None
        if choice is not None and selected.get(name) != choice:
            clicks.append(choice)
    return clicks


def shopper_action(elements: Sequence[pg.Element], kind: str,
                   clickables: dict[str, str | None] | None = None) -> str | None:
    """The shopper's action on a page (its elements, kind: search, results, item, sub, done, and clickables:
    :func:`pages.clickables` of the elements, computed when not given); None when it has none (done, or a
    search that found nothing)."""
    instruction = next((e.text for e in elements if e.role == "instruction"), "")
    if kind == "search":
        return f"search[{instruction.replace('[', ' ').replace(']', ' ').strip() or 'product'}]"
    if kind == "results":
        products = [(e.text, elements[k + 1].text, elements[k + 2].text)
                    for k, e in enumerate(elements) if e.role == "product" and k + 2 < len(elements)]
        asin = choose_product(instruction, products)
        return f"click[{asin.lower()}]" if asin else None  # nothing found: the shopper has no next step
    if kind == "sub":
        return f"click[{pg.PREV_PAGE.lower()}]"
    if kind == "item":
        groups: dict[str, list[str]] = {}
        selected: dict[str, str] = {}
        for e in elements:
            if e.role == "option":
                groups.setdefault(e.option_name or "", []).append(e.text)
                if e.selected:
                    selected[e.option_name or ""] = e.text
        clicks = choose_options(instruction, groups, selected,
                                pg.clickables(list(elements)) if clickables is None else clickables)
        return f"click[{clicks[0].lower()}]" if clicks else f"click[{pg.END_BUTTON.lower()}]"
    return None
