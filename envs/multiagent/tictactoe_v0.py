"""Tic-tac-toe in text, as a PettingZoo AEC and Parallel env (competitive, two players, no chance).

    from hiergym.envs.multiagent import tictactoe_v0
    env = tictactoe_v0.env()            # AEC
    penv = tictactoe_v0.parallel_env()  # Parallel

**Players**: ``player_0`` plays X and moves first, ``player_1`` plays O.

**Observation** (text): what the opponent just did, the board with columns a-c and rows 1-3, whose turn it
is and the legal moves, e.g.::

    player_0 (X) played b2.

       a b c
    1  . . .
    2  . X .
    3  . . .
    You are O (player_1). Your move. Legal moves: a1, b1, c1, a2, c2, a3, b3, c3

**Action** (text): a cell such as ``b2``; ``place b2``, ``play b2`` and ``mark b2`` are accepted too (any
case and spacing).

**Illegal moves forfeit the game**: an occupied cell, a cell that does not exist or any malformed text ends
the game at once as a loss for the player who sent it (PettingZoo's ``TerminateIllegalWrapper`` rule). The
Gymnasium view ``hiergym/TicTacToe-v0`` instead rejects such an action without changing the state.

**Reward**: +1 to the winner and -1 to the loser when the game ends (draw: 0 each); 0 on every other step.

**Episode end**: three in a row, a full board, or a forfeit (all terminations). At most 9 moves.

**Info** per player: the contract keys (``task``, ``admissible_actions``, ``won``, ``action_valid``,
``state_key``), ``to_move``, ``board`` (9 characters, ``x``/``o``/``.``, rows a1..c1, a2..c2, a3..c3), ``mark``
(``"x"`` or ``"o"``).

**Tasks**: ``train`` and ``eval_in`` start from the empty board (the game has no chance, so every seed gives
the same game); ``eval_out`` starts from a random undecided two-ply opening (one X and one O placed), which the
other splits never start from.

**Arguments**: ``render_mode`` (``"ansi"``/``"human"``), ``max_cycles`` (optional cap on moves).
"""

from __future__ import annotations

import functools
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

CELLS = tuple(f"{col}{row}" for row in "123" for col in "abc")
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
MARKS = ("x", "o")
_ALIASES = ("place ", "play ", "mark ", "put ")


def winner_mark(board: str) -> str | None:
    """``"x"`` or ``"o"`` when that mark has three in a row on ``board`` (9 chars of x/o/.), else None."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return None


def mark_to_move(board: str) -> str:
    return "x" if board.count("x") == board.count("o") else "o"


@functools.cache
def minimax_value(board: str) -> int:
    """Game-theoretic value of ``board`` for the player to move: +1 win, 0 draw, -1 loss (perfect play)."""
    if winner_mark(board) is not None:
        return -1  # the previous mover just won
    if "." not in board:
        return 0
    mark = mark_to_move(board)
    return max(-minimax_value(board[:i] + mark + board[i + 1:]) for i, c in enumerate(board) if c == ".")


@functools.cache
def _distance(board: str) -> int:
    """Plies to the end of the game under perfect play where the winner hurries and the loser stalls."""
    if winner_mark(board) is not None or "." not in board:
        return 0
    value = minimax_value(board)
    mark = mark_to_move(board)
    children = [board[:i] + mark + board[i + 1:] for i, c in enumerate(board) if c == "."]
    best = [ch for ch in children if -minimax_value(ch) == value]
    lengths = [1 + _distance(ch) for ch in best]
    return min(lengths) if value > 0 else max(lengths)


def optimal_moves(board: str) -> list[str]:
    """Every cell a perfect player may take on ``board``: keeps the best value, wins fastest, loses slowest."""
    value = minimax_value(board)
    mark = mark_to_move(board)
    scored = []
    for i, c in enumerate(board):
        if c != ".":
            continue
        child = board[:i] + mark + board[i + 1:]
        if -minimax_value(child) == value:
            scored.append((1 + _distance(child), CELLS[i]))
    target = min(s for s, _ in scored) if value > 0 else max(s for s, _ in scored)
    return [cell for s, cell in scored if s == target]


class TicTacToeGame(TextGame):
    name = "tictactoe_v0"
    illegal_move = FORFEIT

    def __init__(self) -> None:
        self.board = "." * 9
        self.forfeited_by: str | None = None

    def new_task(self, rng: np.random.Generator, split: str) -> list[Event]:
        self.board, self.forfeited_by = "." * 9, None
        if split == "eval_out":  # a random undecided two-ply opening
            first, second = rng.choice(9, size=2, replace=False)
            board = list(self.board)
            board[int(first)], board[int(second)] = "x", "o"
            self.board = "".join(board)
        return [Event("A new game of tic-tac-toe: player_0 plays X, player_1 plays O.")]

    # ------------------------------------------------------------------ rules
    def mark_of(self, player: str) -> str:
        return MARKS[self.players.index(player)]

    def player_of(self, mark: str) -> str:
        return self.players[MARKS.index(mark)]

    def winner(self) -> str | None:
        if self.forfeited_by is not None:
            return next(p for p in self.players if p != self.forfeited_by)
        mark = winner_mark(self.board)
        return self.player_of(mark) if mark else None

    def is_over(self) -> bool:
        return self.winner() is not None or "." not in self.board

    def to_move(self) -> tuple[str, ...]:
        return () if self.is_over() else (self.player_of(mark_to_move(self.board)),)

    def legal_actions(self, player: str) -> list[str]:
        if player not in self.to_move():
            return []
        return [cell for cell, c in zip(CELLS, self.board, strict=True) if c == "."]

    def parse_action(self, player: str, action: Any) -> str | None:
        text = normalize_action(action)
        if text is not None:
            for alias in _ALIASES:
                if text.startswith(alias):
                    text = text[len(alias):].strip()
        return super().parse_action(player, text)

    def apply(self, moves: dict[str, str | None]) -> list[Event]:
        (player, move), = moves.items()
        if is_illegal(move):
            self.forfeited_by = player
            return [illegal_event(player, move, "forfeits the game")]
        i = CELLS.index(move)
        mark = self.mark_of(player)
        self.board = self.board[:i] + mark + self.board[i + 1:]
        events = [Event(f"{player} ({mark.upper()}) played {move}.")]
        winner = self.winner()
        if winner is not None:
            events.append(Event(f"Three in a row: {winner} wins."))
        elif "." not in self.board:
            events.append(Event("The board is full: a draw."))
        return events

    def scores(self) -> dict[str, float]:
        winner = self.winner()
        if winner is None:
            return dict.fromkeys(self.players, 0.0)
        return {p: (1.0 if p == winner else -1.0) for p in self.players}

    def won(self, player: str) -> bool:
        return self.winner() == player

    # ------------------------------------------------------------------ text
    def board_text(self) -> str:
        rows = ["   a b c"]
        for r in range(3):
            cells = " ".join(self.board[3 * r + c].upper() for c in range(3))
            rows.append(f"{r + 1}  {cells}")
        return "\n".join(rows)

    def view(self, player: str) -> str:
        mark = self.mark_of(player).upper()
        if self.is_over():
            winner = self.winner()
            status = "Game over: " + ("a draw." if winner is None else
                                      ("you won." if winner == player else "you lost."))
        elif player in self.to_move():
            status = "Your move. Legal moves: " + ", ".join(self.legal_actions(player))
        else:
            status = "Waiting for your opponent's move."
        return f"{self.board_text()}\nYou are {mark} ({player}). {status}"

    def task(self, player: str) -> str:
        return f"Win at tic-tac-toe as {self.mark_of(player).upper()}: get three of your marks in a row."

    def state_key(self) -> str:
        return f"tictactoe|{self.board}|forfeit={self.forfeited_by or '-'}"

    def info_extras(self, player: str) -> dict[str, Any]:
        return {"board": self.board, "mark": self.mark_of(player)}

    def render_text(self) -> str:
        return self.board_text()


class raw_env(TextGameAECEnv):  # noqa: N801 - PettingZoo's naming convention
    """Tic-tac-toe AEC env (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "human"], "name": TicTacToeGame.name, "is_parallelizable": False}
    game_class = TicTacToeGame


class parallel_raw_env(TextGameParallelEnv):  # noqa: N801
    """Tic-tac-toe Parallel env: each step only the player to move acts; the other's action is ignored."""

    metadata = {"render_modes": ["ansi", "human"], "name": TicTacToeGame.name}
    game_class = TicTacToeGame


def env(**kwargs: Any):
    """The AEC env wrapped in PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any) -> parallel_raw_env:
    return parallel_raw_env(**kwargs)
