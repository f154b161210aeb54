"""Multi-issue negotiation in text, as a PettingZoo AEC and Parallel env (mixed-motive, two players).

The "Deal or No Deal" game (Lewis et al., 2017): two players divide a pool of items (e.g. 3 books, 1 hat,
2 balls). Each has private values for the item types, drawn so that the whole pool is worth 10 points to
each of them, every item type is worth something to somebody, and a deal worth at least 6 to *both* exists
(so there is something to gain from finding out what the other wants).

    from hiergym.envs.multiagent import negotiation_v0
    env = negotiation_v0.env(max_turns=10)

**Turns**: ``player_0`` speaks first, then the players alternate; ``max_turns`` messages in all.

**Observation** (text): the other player's last message or offer, the pool, your values, the offer on the
table (what you would get and what it is worth to you), how many turns are left and the action formats.

**Action** (text):

- ``propose[book=1, hat=0, ball=2]``: the items *you* take (types left out count as 0); the other player gets
  the rest. A proposal replaces the offer on the table. ``admissible_actions`` lists every proposal.
- ``accept``: take the other player's offer on the table; the game ends with that deal.
- ``walk away``: end without a deal.
- ``say[any message]``: cheap talk (up to 300 characters), delivered to the other player.

**Illegal moves lose the turn**: malformed text, a proposal that asks for items not in the pool, or ``accept``
with no offer from the other player on the table does nothing and uses up the turn (both are told).

**Reward**: when a deal is accepted each player gets the value of its share to itself (0-10 points); a walk
away or running out of turns gives both 0. All other steps give 0.

**Episode end**: accept, walk away, or ``max_turns`` messages without a deal (terminations: the deadline is a
rule of the game).

**Info** per player: the contract keys (``won``: a deal worth at least half the pool, 5 points, to the
player), ``to_move``, ``pool`` ({item: count}), ``values`` (the player's own {item: value}), ``offer`` (what the
player would get under the offer on the table; ``{}`` when there is none), ``offer_by`` (who made it; ``""`` when
there is none), ``turn``, ``max_turns``. Every key keeps one type on every step, so Gymnasium's vector envs can
batch the infos.

**Tasks**: ``train`` and ``eval_in`` pools have 3 item types named from a training catalogue; ``eval_out`` pools
have 4 item types, two of them from names never used in training.

**Arguments**: ``max_turns`` (default 10), ``render_mode``, ``max_cycles``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
from pettingzoo.utils import wrappers

from hiergym.envs.core import normalize_action
from hiergym.envs.multiagent.base import (
    PASS,
    Event,
    TextGame,
    TextGameAECEnv,
    TextGameParallelEnv,
    illegal_event,
    is_illegal,
)

TRAIN_ITEMS = ("book", "hat", "ball", "apple", "pen", "cup")
HELD_OUT_ITEMS = ("lamp", "coin", "shoe", "key")
TOTAL_VALUE = 10
#: A deal worth at least this much to both players exists in every generated pool.
MUTUAL_VALUE = 6
#: A player "wins" a deal worth at least this much to it (half the pool).
WIN_VALUE = 5
MAX_SAY_CHARS = 300
ACCEPT, WALK_AWAY = "accept", "walk away"

_PROPOSE = re.compile(r"^propose\s*\[(.*)\]$")
_SAY = re.compile(r"^say\s*\[(.*)\]$")
_ITEM = re.compile(r"^(?:([a-z]+)\s*[=:]\s*(\d+)|(\d+)\s+([a-z]+?)s?)$")


def value_of(share: dict[str, int], values: dict[str, int]) -> int:
    return sum(n * values[item] for item, n in share.items())


def format_proposal(share: dict[str, int], items: tuple[str, ...]) -> str:
    return "propose[" + ", ".join(f"{item}={share.get(item, 0)}" for item in items) + "]"


def all_shares(pool: dict[str, int]) -> list[dict[str, int]]:
    """Every division of ``pool``, as what one player takes, in a fixed order."""
    items = tuple(pool)
    return [dict(zip(items, counts, strict=True))
            for counts in itertools.product(*(range(pool[i] + 1) for i in items))]


def _value_vectors(counts: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every non-negative integer value vector with sum(count * value) == TOTAL_VALUE."""
    vectors: list[tuple[int, ...]] = []

    def extend(prefix: tuple[int, ...], remaining: int) -> None:
        i = len(prefix)
        if i == len(counts):
            if remaining == 0:
                vectors.append(prefix)
            return
        for v in range(remaining // counts[i] + 1):
            extend((*prefix, v), remaining - v * counts[i])

    extend((), TOTAL_VALUE)
    return vectors


def generate_pool(rng: np.random.Generator, split: str) -> tuple[dict[str, int], tuple[dict[str, int], ...]]:
    """A pool and both players' values (see the module docstring for the guarantees)."""
    while True:
        if split == "eval_out":
            names = [*rng.choice(TRAIN_ITEMS, size=2, replace=False), *rng.choice(HELD_OUT_ITEMS, 2, replace=False)]
            counts = tuple(int(c) for c in rng.integers(1, 4, size=4))
        else:
            names = list(rng.choice(TRAIN_ITEMS, size=3, replace=False))
            counts = tuple(int(c) for c in rng.integers(1, 5, size=3))
            if not 5 <= sum(counts) <= 7:
                continue
        vectors = _value_vectors(counts)
        a, b = (vectors[int(i)] for i in rng.integers(0, len(vectors), size=2))
        if a == b or any(x == 0 and y == 0 for x, y in zip(a, b, strict=True)):
            continue
        pool = dict(zip(map(str, names), counts, strict=True))
        values = (dict(zip(pool, a, strict=True)), dict(zip(pool, b, strict=True)))
        shares = all_shares(pool)
        if any(value_of(s, values[0]) >= MUTUAL_VALUE
               and value_of(_rest(pool, s), values[1]) >= MUTUAL_VALUE for s in shares):
            return pool, values


def _rest(pool: dict[str, int], share: dict[str, int]) -> dict[str, int]:
    return {item: pool[item] - share.get(item, 0) for item in pool}


class NegotiationGame(TextGame):
    name = "negotiation_v0"
    illegal_move = PASS

    def __init__(self, max_turns: int = 10) -> None:
        if not isinstance(max_turns, int) or max_turns < 2:
            raise ValueError(f"max_turns must be an integer >= 2, got {max_turns!r}")
        self.max_turns = max_turns
        self.pool: dict[str, int] = {}
        self.values: dict[str, dict[str, int]] = {}
        self.turn = 0
        self.offer: dict[str, int] | None = None  # what offer_by takes
        self.offer_by: str | None = None
        self.outcome: str | None = None  # "deal", "walk away", "deadline"
        self.deal: dict[str, dict[str, int]] | None = None

    def new_task(self, rng: np.random.Generator, split: str) -> list[Event]:
        self.pool, values = generate_pool(rng, split)
        self.values = dict(zip(self.players, values, strict=True))
        self.turn, self.offer, self.offer_by, self.outcome, self.deal = 0, None, None, None, None
        self._shares = all_shares(self.pool)
        self._proposals = [format_proposal(share, tuple(self.pool)) for share in self._shares]
        return [Event(f"A new negotiation over {self.pool_text()}. {self.players[0]} speaks first.")]

    # ------------------------------------------------------------------ rules
    def other(self, player: str) -> str:
        return self.players[1 - self.players.index(player)]

    def is_over(self) -> bool:
        return self.outcome is not None

    def to_move(self) -> tuple[str, ...]:
        return () if self.is_over() else (self.players[self.turn % 2],)

    def offer_for(self, player: str) -> dict[str, int] | None:
        """What ``player`` would get under the offer on the table (None when there is none)."""
        if self.offer is None:
            return None
        return dict(self.offer) if self.offer_by == player else _rest(self.pool, self.offer)

    def legal_actions(self, player: str) -> list[str]:
        if player not in self.to_move():
            return []
        actions = list(self._proposals)
        if self.offer is not None and self.offer_by != player:
            actions.append(ACCEPT)
        actions.append(WALK_AWAY)
        return actions

    def parse_action(self, player: str, action: Any) -> str | None:
        text = normalize_action(action)
        if text is None or player not in self.to_move():
            return None
        if text in ("walk away", "walkaway", "walk-away", "walk_away"):
            return WALK_AWAY
        if text == ACCEPT:
            return ACCEPT if self.offer is not None and self.offer_by != player else None
        said = _SAY.match(text)
        if said:
            message = said.group(1).strip()
            return f"say[{message}]" if 0 < len(message) <= MAX_SAY_CHARS else None
        share = self.parse_share(text)
        return format_proposal(share, tuple(self.pool)) if share is not None else None

    def parse_share(self, text: str) -> dict[str, int] | None:
        """The share a ``propose[...]`` text asks for, or None when it is not a feasible proposal."""
        match = _PROPOSE.match(text)
        if not match:
            return None
        share = dict.fromkeys(self.pool, 0)
        seen: set[str] = set()
        for part in filter(None, (p.strip() for p in match.group(1).split(","))):
            item_match = _ITEM.match(part)
            if not item_match:
                return None
            name, count = ((item_match.group(1), item_match.group(2)) if item_match.group(1)
                           else (item_match.group(4), item_match.group(3)))
            name = name if name in self.pool else name.rstrip("s")
            if name not in self.pool or name in seen or int(count) > self.pool[name]:
                return None
            seen.add(name)
            share[name] = int(count)
        return share

    def apply(self, moves: dict[str, str | None]) -> list[Event]:
        (player, move), = moves.items()
        other = self.other(player)
        self.turn += 1
        if is_illegal(move):
            events = [illegal_event(player, move, "loses its turn")]
        elif move == WALK_AWAY:
            self.outcome = "walk away"
            return [Event(f"{player} walks away. No deal: both get 0 points.")]
        elif move == ACCEPT:
            self.outcome = "deal"
            self.deal = {other: dict(self.offer), player: _rest(self.pool, self.offer)}  # type: ignore[arg-type]
            return [Event(f"{player} accepts. Deal: " + "; ".join(
                f"{p} gets {self.share_text(self.deal[p])}" for p in self.players) + ".")]
        elif move.startswith("say["):
            events = [Event(f'{player} says: "{move[4:-1]}"')]
        else:
            self.offer, self.offer_by = self.parse_share(move), player
            events = [Event(f"{player} proposes to take {self.share_text(self.offer)} "  # type: ignore[arg-type]
                            f"and leave {self.share_text(_rest(self.pool, self.offer))} to {other}.")]
        if self.turn >= self.max_turns:
            self.outcome = "deadline"
            events.append(Event(f"The {self.max_turns} turns are used up without a deal: both get 0 points."))
        return events

    def scores(self) -> dict[str, float]:
        if self.outcome != "deal":
            return dict.fromkeys(self.players, 0.0)
        return {p: float(value_of(self.deal[p], self.values[p])) for p in self.players}  # type: ignore[index]

    def won(self, player: str) -> bool:
        return self.outcome == "deal" and self.scores()[player] >= WIN_VALUE

    # ------------------------------------------------------------------ text
    def pool_text(self) -> str:
        return ", ".join(f"{n} {item}" for item, n in self.pool.items())

    def share_text(self, share: dict[str, int]) -> str:
        return ", ".join(f"{n} {item}" for item, n in share.items())

    def view(self, player: str) -> str:
        values = self.values[player]
        lines = [
            f"Pool: {self.pool_text()}. Your values: "
            + ", ".join(f"{item} {v}" for item, v in values.items())
            + f" (the whole pool is worth {TOTAL_VALUE} to you).",
        ]
        if self.is_over():
            verdict = {"deal": "Deal reached", "walk away": "No deal (walk away)",
                       "deadline": "No deal (out of turns)"}[self.outcome]  # type: ignore[index]
            lines.append(f"{verdict}. Your points: {self.scores()[player]:.0f}.")
            return "\n".join(lines)
        offer = self.offer_for(player)
        if offer is None:
            lines.append("No offer on the table.")
        else:
            lines.append(f"Offer on the table from {self.offer_by}: you would get {self.share_text(offer)} "
                         f"(worth {value_of(offer, values)} to you).")
        left = self.max_turns - self.turn
        if player in self.to_move():
            example = format_proposal(dict.fromkeys(self.pool, 1), tuple(self.pool))
            can_accept = "accept, " if self.offer is not None and self.offer_by != player else ""
            lines.append(f"Your turn ({left} turns left in all). Actions: propose[...] the items you take, "
                         f"e.g. {example}; {can_accept}walk away; say[message].")
        else:
            lines.append(f"Waiting for {self.other(player)} ({left} turns left in all).")
        return "\n".join(lines)

    def task(self, player: str) -> str:
        return (f"Negotiate how to divide {self.pool_text()} with the other player. Agree on a deal worth at "
                f"least {WIN_VALUE} points to you (your values are private; no deal gives 0).")

    def state_key(self) -> str:
        offer = "-" if self.offer is None else f"{self.offer_by}:{format_proposal(self.offer, tuple(self.pool))}"
        values = "/".join(",".join(map(str, self.values[p].values())) for p in self.players)
        return (f"negotiation|{self.pool_text()}|values={values}|turn={self.turn}|offer={offer}"
                f"|outcome={self.outcome or '-'}")

    def info_extras(self, player: str) -> dict[str, Any]:
        return {
            "pool": dict(self.pool),
            "values": dict(self.values[player]),
            # {} / "" rather than None: one type per key across steps and copies (Gymnasium batches infos)
            "offer": self.offer_for(player) or {},
            "offer_by": self.offer_by or "",
            "turn": self.turn,
            "max_turns": self.max_turns,
        }

    def render_text(self) -> str:
        lines = [f"Pool: {self.pool_text()}"]
        for p in self.players:
            lines.append(f"{p} values: " + ", ".join(f"{i} {v}" for i, v in self.values[p].items()))
        lines.append(f"turn {self.turn}/{self.max_turns}; offer: "
                     + ("-" if self.offer is None else f"{self.offer_by} takes {self.share_text(self.offer)}")
                     + f"; outcome: {self.outcome or '-'}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- PettingZoo
class raw_env(TextGameAECEnv):  # noqa: N801 - PettingZoo's naming convention
    """Negotiation AEC env (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "human"], "name": NegotiationGame.name, "is_parallelizable": False}
    game_class = NegotiationGame


class parallel_raw_env(TextGameParallelEnv):  # noqa: N801
    """Negotiation Parallel env: each step only the player to speak acts; the other's action is ignored."""

    metadata = {"render_modes": ["ansi", "human"], "name": NegotiationGame.name}
    game_class = NegotiationGame


def env(**kwargs: Any):
    """The AEC env wrapped in PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any) -> parallel_raw_env:
    return parallel_raw_env(**kwargs)
