"""WebShop's pages: the elements of each page, its text observation ("[SEP]" layout) and its HTML.

A page is a list of :class:`Element` in the order WebShop's templates lay them out. WebShop's text mode
(``observation_mode="text"``) joins the visible texts of the page's HTML with ``" [SEP] "``; the clickables are
its buttons and product links (their text, lower-cased) and the option values (radio buttons). Both views here
come from the same elements, so the HTML a person sees and the text an agent reads cannot disagree.

Pages (WebShop's templates ``search_page``, ``results_page``, ``item_page``, ``description_page``,
``features_page``, ``review_page`` and ``done_page``)::

    search:   WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search
    results:  Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP]
              Next > [SEP] B0... [SEP] <title> [SEP] $<price> [SEP] ...            (< Prev from page 2 on)
    item:     Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] < Prev [SEP] <option name> [SEP]
              <value> [SEP] ... [SEP] <title> [SEP] Price: $<price> [SEP] Rating: <rating> [SEP] Description
              [SEP] Features [SEP] Reviews [SEP] Buy Now
    sub-page: Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] < Prev [SEP] <description | bullet
              points | "review title" [SEP] score [SEP] review text ...>
    done:     Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <reward>

The done page shows only what WebShop's done page shows a person (its hidden debugging fields, which would
repeat the goal, are left out).
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NamedTuple

SEP = " [SEP] "
BACK_TO_SEARCH = "Back to Search"
NEXT_PAGE = "Next >"
PREV_PAGE = "< Prev"
END_BUTTON = "Buy Now"
SUB_PAGES = ("Description", "Features", "Reviews")
PRODUCT_WINDOW = 10  # WebShop's results per page


@dataclass
class PageState:
    """Where the shopper is: WebShop's session fields (keywords, page, asin, options) plus the page shown."""

    kind: str = "search"  # search | results | item | sub | done
    keywords: tuple[str, ...] = ()
    page: int = 1
    results: tuple[int, ...] = ()  # catalog indices of the search's results (at most 50)
    item: int | None = None  # catalog index of the product shown
    options: dict[str, str] = field(default_factory=dict)
    sub_page: str | None = None
    reward: float = 0.0

    def copy(self) -> PageState:
        return PageState(self.kind, self.keywords, self.page, self.results, self.item, dict(self.options),
                         self.sub_page, self.reward)


class Element(NamedTuple):
    """One visible text of a page. ``role``: text, heading, button, product (a product link) or option."""

    text: str
    role: str = "text"
    option_name: str | None = None
    selected: bool = False


_PUNCTUATION = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
                              "\u201d": '"', "\u2026": "...", "\u00d7": "x", "\u203a": ">", "\u00a0": " ",
                              "\u00ab": '"', "\u00bb": '"', "\u00b7": "-", "\u2022": "-",
                              # letters that do not decompose into an ASCII letter and a mark
                              "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE",
                              "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d",
                              "\u0110": "D", "\u00fe": "th", "\u00de": "Th", "\u0131": "i"})


def to_ascii(text: str) -> str:
    """Printable ASCII (the observation charset): punctuation and accents folded, the rest dropped, spaces collapsed.

    This is the one normalisation of WebShop's text: the real data's catalog and goals are folded with it when
    they are loaded, so pages, admissible actions, the expert and the reward all read the same strings.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(_PUNCTUATION)).encode("ascii", "ignore").decode()
    if not text.isprintable():  # control characters, like tabs and newlines, become spaces
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def to_ascii_key(text: str) -> str:
    """:func:`to_ascii` for a value that is clicked or matched (an option value, an attribute).

    Such a value must stay non-empty and distinct: text with nothing to fold (``"抹茶味"``) keeps its
    ``\\u`` escapes (``"\\u62b9\\u8336\\u5473"``), which an agent can type.
    """
    return to_ascii(text) or to_ascii(text.encode("ascii", "backslashreplace").decode())


def page_elements(state: PageState, catalog: Any, instruction: str) -> list[Element]:
    """The elements of the page ``state`` shows, in WebShop's layout order."""
    header = [Element("Instruction:"), Element(instruction, "instruction")]
    if state.kind == "search":
        return [Element("WebShop", "heading"), *header, Element("Search", "search")]
    if state.kind == "done":
        return [Element("Thank you for shopping with us!", "heading"), Element("Your score (min 0.0, max 1.0)"),
                Element(str(state.reward))]
    elements = [*header, Element(BACK_TO_SEARCH, "button")]
    if state.kind == "results":
        total = len(state.results)
        elements.append(Element(f"Page {state.page} (Total results: {total})", "heading"))
        if state.page > 1:
            elements.append(Element(PREV_PAGE, "button"))
        elements.append(Element(NEXT_PAGE, "button"))  # WebShop shows Next > on every results page
        start = (state.page - 1) * PRODUCT_WINDOW
        for index in state.results[start:start + PRODUCT_WINDOW]:
            asin, title, price_tag = catalog.summary(index)
            elements += [Element(asin, "product"), Element(title), Element(price_tag)]
        return elements
    product = catalog.product(state.item)
    elements.append(Element(PREV_PAGE, "button"))
    if state.kind == "item":
        for name, values in product.options.items():
            elements.append(Element(name, "option-name"))
            # options hold the clicked (lower-cased) text: a value written in capitals is selected too
            elements += [Element(v, "option", name, state.options.get(name, "").lower() == v.lower()) for v in values]
        elements += [Element(product.title, "heading"), Element(f"Price: {product.price_tag}"),
                     Element(f"Rating: {product.rating}")]
        elements += [Element(name, "button") for name in SUB_PAGES]
        elements.append(Element(END_BUTTON, "button"))
    elif state.sub_page == "description":
        elements.append(Element(product.description))
    elif state.sub_page == "features":
        elements += [Element(b) for b in product.bullets]
    elif state.sub_page == "reviews":
        for review in product.reviews:
            elements += [Element(f'"{review.get("title", "")}"'), Element(str(review.get("score", ""))),
                         Element(str(review.get("body", "")))]
    return elements


def observation_text(elements: list[Element], clean: bool = False) -> str:
    """WebShop's simple text mode: the visible texts joined by " [SEP] " (empty texts left out).

    ``clean=True`` says every text is already printable ASCII with single spaces (the generated catalog's
    are, by construction), which skips :func:`to_ascii`.
    """
    if clean:
        return SEP.join(e.text for e in elements if e.text)
    return SEP.join(t for t in (to_ascii(e.text) for e in elements) if t)


def clickables(elements: list[Element], clean: bool = False) -> dict[str, str | None]:
    """WebShop's ``text_to_clickable`` keys, in its order (buttons and product links, then options).

    Maps each clickable's lower-cased text to the option it sets (None for buttons and links); when two
    options share a value, the later one wins, as in WebShop.
    """
    fold = str.lower if clean else (lambda text: to_ascii(text).lower())
    result: dict[str, str | None] = {}
    for e in elements:
        if e.role in ("button", "product", "search"):
            result[fold(e.text)] = None
    for e in elements:
        if e.role == "option":
            result[fold(e.text)] = e.option_name
    return result


# -------------------------------------------------------------------------------------------------- HTML
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
.bar{background:#232f3e;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
.bar a{color:#fff}.wrap{max-width:1000px;margin:16px auto;background:#fff;padding:16px 24px;border-radius:6px}
.ins{background:#fff8e1;border:1px solid #f0d58c;padding:8px 12px;border-radius:4px;margin-bottom:12px}
form.inline{display:inline}button{margin:3px 4px 3px 0;padding:5px 12px;border:1px solid #888;border-radius:4px;
background:#fafafa;cursor:pointer}button.sel{background:#2e7d32;color:#fff;border-color:#2e7d32}
button.buy{background:#ff9900;border-color:#c77700}button.link{border:none;background:none;color:#0645ad;
text-decoration:underline;font-weight:bold;padding:0}.product{border-top:1px solid #ddd;padding:8px 0}
pre{white-space:pre-wrap;background:#f0f0f0;padding:8px;font-size:12px}input[type=text]{width:60%;padding:6px}
"""


def _button(text: str, css: str = "") -> str:
    action = html.escape(f"click[{to_ascii(text).lower()}]", quote=True)
    return (f'<form class="inline" method="post" action="/act"><input type="hidden" name="action" '
            f'value="{action}"><button class="{css}" type="submit">{html.escape(to_ascii(text))}</button></form>')


def render_html(elements: list[Element], *, observation: str, admissible: list[str], status: str) -> str:
    """The page as HTML a person can click through; every control posts the action an agent would send."""
    body: list[str] = []
    for e in elements:
        text = html.escape(to_ascii(e.text))
        if e.role == "instruction":
            body.append(f'<div class="ins"><b>Instruction:</b> {text}</div>')
        elif e.text == "Instruction:":
            continue
        elif e.role == "search":
            body.append('<form method="post" action="/act"><input type="hidden" name="kind" value="search">'
                        '<input type="text" name="query" placeholder="Search..." autofocus> '
                        '<button type="submit">Search</button></form>')
        elif e.role == "button":
            body.append(_button(e.text, "buy" if e.text == END_BUTTON else ""))
        elif e.role == "product":
            body.append(f'<div class="product">{_button(e.text, "link")}')
        elif e.role == "option-name":
            body.append(f"<div><b>{text}</b></div>")
        elif e.role == "option":
            body.append(_button(e.text, "sel" if e.selected else ""))
        elif e.role == "heading":
            body.append(f"<h2>{text}</h2>")
        else:
            body.append(f"<p>{text}</p>")
    actions = html.escape(", ".join(admissible))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>hiergym WebShop</title>"
            f"<style>{_STYLE}</style></head><body><div class='bar'><b>hiergym WebShop</b><span>{html.escape(status)}"
            f"</span><a href='/reset'>new task</a><a href='/text'>text view</a></div><div class='wrap'>"
            f"{''.join(body)}<details><summary>What the agent sees</summary><pre>{html.escape(observation)}</pre>"
            f"<p><b>Admissible actions:</b> {actions}</p></details></div></body></html>")
