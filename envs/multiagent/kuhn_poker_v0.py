"""Kuhn poker in text, as a PettingZoo AEC and Parallel env (competitive, two players, hidden cards).

    from hiergym.envs.multiagent import kuhn_poker_v0
    env = kuhn_poker_v0.env(num_hands=1)

**Rules** (Kuhn, 1950): a deck of three cards J < Q < K; each player antes 1 chip and gets one card. The first
player may ``check`` or ``bet`` (1 chip). After a check the second player may ``check`` (showdown for the pot
of 2) or ``bet``; facing a bet a player may ``call`` (showdown for the pot of 4) or ``fold`` (the bettor takes
the pot). The higher card wins a showdown. A match of ``num_hands`` hands alternates who acts first:
``player_0`` in hands 1, 3, ..., ``player_1`` in hands 2, 4, ...

**Observation** (text): the hand number, your card, the actions of this hand so far, the pot, the chips
won or lost in the match so far, and the legal actions.

**Action** (text): ``check``, ``bet``, ``call`` or ``fold`` (``pass`` is read as check or fold, as in Kuhn's
original description).

**Illegal moves fold the hand**: malformed text or an action that is not legal now (e.g. ``call`` with no bet to
call) counts as a fold: the offender loses what it has put in the pot and the next hand starts. The
Gymnasium view ``hiergym/KuhnPoker-v0`` instead rejects such an action without changing the state.

**Reward**: each player's chips won (+) or lost (-) in a hand, given when the hand ends (zero-sum).

**Episode end**: after ``num_hands`` hands (terminations). At most 3 actions per hand.

**Info** per player: the contract keys; ``won`` is True once the match is over with the player ahead
(chips > 0); ``to_move``; ``card`` (its own card, ``"J"``/``"Q"``/``"K"``), ``history`` (this hand's actions
as ``c``/``b``/``k`` for check/bet/call and ``f`` for fold, e.g. ``"cb"``), ``first_to_act`` (bool), ``hand``
(0-based), ``chips``.

**Tasks**: the seed deals every hand of the match. Kuhn poker has no structure to hold out, so all splits deal
from the same distribution (with different generators).

**Arguments**: ``num_hands`` (default 1), ``render_mode``, ``max_cycles``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pettingzoo.utils import wrappers

from hiergym.envs.core import normalize_action
from hiergym.envs.multiagent.base import (
    FORFEIT,
    Event,
    TextGame,
    TextGameAECEnv,
    TextGameParallelEnv,
    illegal_event,
    is_illegal,
)

CARDS = ("J", "Q", "K")
CARD_NAMES = {"J": "Jack", "Q": "Queen", "K": "King"}
#: One-letter codes of the history string.
CODES = {"check": "c", "bet": "b", "call": "k", "fold": "f"}
ACTIONS = {code: action for action, code in CODES.items()}
#: Histories (first mover's action first) that end a hand.
TERMINAL_HISTORIES = ("cc", "bk", "bf", "cbk", "cbf")


def legal_in_history(history: str) -> list[str]:
    """Legal actions after ``history`` (codes c/b/k/f); empty when the hand is over."""
    if history in TERMINAL_HISTORIES:
        return []
    return ["call", "fold"] if history.endswith("b") else ["check", "bet"]


def hand_payoff(history: str, first_card: str, second_card: str) -> int:
    """Chips the *first* mover wins (negative: loses) in a finished hand."""
    if history.endswith("f"):  # the folder loses what it has put in: the ante
        folder_is_first = len(history) % 2 == 1
        return -1 if folder_is_first else 1
    stake = 2 if "b" in history else 1
    return stake if CARDS.index(first_card) > CARDS.index(second_card) else -stake


class KuhnPokerGame(TextGame):
    name = "kuhn_poker_v0"
    illegal_move = FORFEIT

    def __init__(self, num_hands: int = 1) -> None:
        if not isinstance(num_hands, int) or num_hands < 1:
            raise ValueError(f"num_hands must be a positive integer, got {num_hands!r}")
        self.num_hands = num_hands
        self.deals: list[tuple[str, str]] = []  # (card of player_0, card of player_1) per hand
        self.hand = 0
        self.history = ""
        self.chips = dict.fromkeys(self.players, 0.0)

    def new_task(self, rng: np.random.Generator, split: str) -> list[Event]:
        self.deals = []
        for _ in range(self.num_hands):
            a, b = rng.choice(3, size=2, replace=False)
            self.deals.append((CARDS[int(a)], CARDS[int(b)]))
        self.hand, self.history = 0, ""
        self.chips = dict.fromkeys(self.players, 0.0)
        return self._deal_events()

    # ------------------------------------------------------------------ rules
    def first_mover(self, hand: int | None = None) -> str:
        return self.players[(self.hand if hand is None else hand) % 2]

    def card_of(self, player: str) -> str:
        return self.deals[self.hand][self.players.index(player)]

    def is_over(self) -> bool:
        return self.hand >= self.num_hands

    def to_move(self) -> tuple[str, ...]:
        if self.is_over():
            return ()
        first = self.first_mover()
        second = next(p for p in self.players if p != first)
        return (first if len(self.history) % 2 == 0 else second,)

    def legal_actions(self, player: str) -> list[str]:
        return legal_in_history(self.history) if player in self.to_move() else []

    def parse_action(self, player: str, action: Any) -> str | None:
        text = normalize_action(action)
        if text == "pass" and player in self.to_move():
            text = "fold" if self.history.endswith("b") else "check"
        return super().parse_action(player, text)

    def apply(self, moves: dict[str, str | None]) -> list[Event]:
        (player, move), = moves.items()
        if is_illegal(move):
            # a forfeit folds the hand: the offender loses what it has put in (its ante and any bet or call)
            offender_is_first = len(self.history) % 2 == 0
            put_in = 1 + sum(c in "bk" for c in self.history[0 if offender_is_first else 1::2])
            return [illegal_event(player, move, "folds the hand"),
                    *self._finish_hand(-put_in if offender_is_first else put_in)]
        events = [Event(f"{player} {'checks' if move == 'check' else move + 's'}.")]
        self.history += CODES[move]
        if self.history in TERMINAL_HISTORIES:
            events.extend(self._finish_hand())
        return events

    def _finish_hand(self, forced: int | None = None) -> list[Event]:
        """Settle the hand (``forced``: the first mover's result of a forfeit) and deal the next one."""
        first = self.first_mover()
        second = next(p for p in self.players if p != first)
        first_card, second_card = self.card_of(first), self.card_of(second)
        won = forced if forced is not None else hand_payoff(self.history, first_card, second_card)
        self.chips[first] += won
        self.chips[second] -= won
        winner = first if won > 0 else second
        if forced is not None:
            loser = second if winner == first else first
            text = f"{loser} forfeits the hand and loses {abs(won)} chip{'s' if abs(won) > 1 else ''} to {winner}."
        elif self.history.endswith("f"):
            text = f"{winner} wins the pot of {abs(won) * 2} chips without a showdown."
        else:
            text = (f"Showdown: {first} has the {CARD_NAMES[first_card]}, {second} has the "
                    f"{CARD_NAMES[second_card]}; {winner} wins the pot of {abs(won) * 2} chips.")
        events = [Event(text)]
        self.hand += 1
        self.history = ""
        if not self.is_over():
            events.extend(self._deal_events())
        return events

    def _deal_events(self) -> list[Event]:
        events = [Event(f"Hand {self.hand + 1} of {self.num_hands}: each player antes 1 chip; "
                        f"{self.first_mover()} acts first.")]
        for player in self.players:
            events.append(Event(f"You are dealt the {CARD_NAMES[self.card_of(player)]}.", (player,)))
        return events

    def scores(self) -> dict[str, float]:
        return dict(self.chips)

    def won(self, player: str) -> bool:
        return self.is_over() and self.chips[player] > 0

    # ------------------------------------------------------------------ text
    def _history_text(self) -> str:
        if not self.history:
            return "no actions yet"
        first = self.first_mover()
        second = next(p for p in self.players if p != first)
        return ", ".join(f"{(first, second)[i % 2]} {ACTIONS[c]}" for i, c in enumerate(self.history))

    def view(self, player: str) -> str:
        chips = self.chips[player]
        if self.is_over():
            verdict = "you won" if chips > 0 else ("you lost" if chips < 0 else "even")
            return f"The match is over: {chips:+.0f} chips for you ({verdict})."
        pot = 2 + self.history.count("b") + self.history.count("k")
        lines = [
            f"Kuhn poker, hand {self.hand + 1} of {self.num_hands}. You are {player}"
            f" and act {'first' if self.first_mover() == player else 'second'} this hand.",
            f"Your card: {CARD_NAMES[self.card_of(player)]}. Actions so far: {self._history_text()}. "
            f"Pot: {pot} chips. Your match total: {chips:+.0f} chips.",
        ]
        if player in self.to_move():
            lines.append("Your turn. Legal actions: " + ", ".join(self.legal_actions(player)))
        else:
            lines.append("Waiting for your opponent.")
        return "\n".join(lines)

    def task(self, player: str) -> str:
        hands = "a hand" if self.num_hands == 1 else f"a match of {self.num_hands} hands"
        return f"Win chips at Kuhn poker: finish {hands} ahead."

    def state_key(self) -> str:
        deals = ",".join(a + b for a, b in self.deals)
        return f"kuhn|deals={deals}|hand={self.hand}|history={self.history}|chips={self.chips['player_0']:+.0f}"

    def info_extras(self, player: str) -> dict[str, Any]:
        extras: dict[str, Any] = {"hand": self.hand, "chips": self.chips[player], "history": self.history}
        if not self.is_over():
            extras.update(card=self.card_of(player), first_to_act=self.first_mover() == player)
        return extras

    def render_text(self) -> str:
        if self.is_over():
            return "Match over: " + ", ".join(f"{p} {c:+.0f}" for p, c in self.chips.items())
        first = self.first_mover()
        return (f"Hand {self.hand + 1}/{self.num_hands}; cards: "
                + ", ".join(f"{p} {self.card_of(p)}" for p in self.players)
                + f"; first: {first}; history: {self.history or '-'}; chips: "
                + ", ".join(f"{p} {c:+.0f}" for p, c in self.chips.items()))


# ---------------------------------------------------------------------------------------- analysis
#: A strategy: (card, history, first_to_act) -> {action: probability}.
Strategy = Callable[[str, str, bool], dict[str, float]]


def best_response_value(strategy: Strategy, br_first: bool) -> float:
    """Exact expected chips per hand of a best response to ``strategy``.

    The best responder sits first to act when ``br_first`` (else second); ``strategy`` plays the other
    seat. Deals are uniform over the 6 ordered pairs. The best response picks, in each of its information
    sets (own card, history), the action with the highest value summed over the opponent's cards weighted by
    the chance and the strategy's probability of reaching that history.
    """

    def value(history: str, br_card: str, opp_card: str, choice: dict[tuple[str, str], str]) -> float:
        if history in TERMINAL_HISTORIES:
            first_card, second_card = (br_card, opp_card) if br_first else (opp_card, br_card)
            first_won = hand_payoff(history, first_card, second_card)
            return first_won if br_first else -first_won
        br_turn = (len(history) % 2 == 0) == br_first
        if br_turn:
            return value(history + CODES[choice[(br_card, history)]], br_card, opp_card, choice)
        probs = strategy(opp_card, history, not br_first)
        return sum(p * value(history + CODES[a], br_card, opp_card, choice) for a, p in probs.items() if p > 0)

    # the best responder's information sets, decided from the deepest up (a finite, tiny game tree)
    total = 0.0
    for br_card in CARDS:
        choice: dict[tuple[str, str], str] = {}
        histories = ["", "cb"] if br_first else ["b", "c"]
        for history in sorted(histories, key=len, reverse=True):
            best_action, best_value = None, -float("inf")
            for action in legal_in_history(history):
                choice[(br_card, history)] = action
                v = 0.0
                for opp_card in CARDS:
                    if opp_card == br_card:
                        continue
                    v += _reach(strategy, history, opp_card, br_first) * value(
                        history, br_card, opp_card, {**choice, (br_card, history): action}
                    )
                if v > best_value:
                    best_action, best_value = action, v
            choice[(br_card, history)] = best_action  # type: ignore[assignment]
        total += sum(value("", br_card, o, choice) for o in CARDS if o != br_card)
    return total / 6


def _reach(strategy: Strategy, history: str, opp_card: str, br_first: bool) -> float:
    """Probability that the opponent's own actions lead to ``history`` (the best responder's are given)."""
    prob = 1.0
    for i, code in enumerate(history):
        opp_turn = (i % 2 == 0) != br_first
        if opp_turn:
            prob *= strategy(opp_card, history[:i], not br_first).get(ACTIONS[code], 0.0)
    return prob


def exploitability(strategy: Strategy) -> float:
    """How much a best response wins per hand against ``strategy`` playing both seats equally often.

    Zero for a Nash equilibrium: the game's value is -1/18 for the first mover, so a best response wins
    ``(BR_first + BR_second) / 2`` which is 0 at equilibrium and positive otherwise.
    """
    return (best_response_value(strategy, True) + best_response_value(strategy, False)) / 2


# ---------------------------------------------------------------------------------------- PettingZoo
class raw_env(TextGameAECEnv):  # noqa: N801 - PettingZoo's naming convention
    """Kuhn poker AEC env (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "human"], "name": KuhnPokerGame.name, "is_parallelizable": False}
    game_class = KuhnPokerGame


class parallel_raw_env(TextGameParallelEnv):  # noqa: N801
    """Kuhn poker Parallel env: each step only the player to act acts; the other's action is ignored."""

    metadata = {"render_modes": ["ansi", "human"], "name": KuhnPokerGame.name}
    game_class = KuhnPokerGame


def env(**kwargs: Any):
    """The AEC env wrapped in PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any) -> parallel_raw_env:
    return parallel_raw_env(**kwargs)
