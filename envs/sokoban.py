"""Sokoban as a multi-turn text environment, with a fast always-solvable generator and an optimal solver.

Push every box onto a target in a walled room. Rooms are generated procedurally the way gym-sokoban does it
(carve a room with a random-walk brush, put the boxes on their targets, then play backwards by *pulling*
boxes), so every room is solvable by construction; the generator then solves the room with the A* solver
below to record its optimal solution length. A 10x10 room with 3 boxes takes a few milliseconds, far less
than gym-sokoban's depth-first reverse-play search (``benchmarks/env_throughput.py``; ``docs/sokoban.md``).

Observation:
    Text: the goal and boxes-on-targets count, the grid, and a legend. On steps, a first line of feedback
    (what the last action did, or why nothing happened). Symbols:

    ``#`` wall, ``_`` floor, ``O`` target, ``X`` box, ``V`` box on target, ``P`` player, ``S`` player on target.

Action:
    Text, case and surrounding whitespace forgiven:

    - ``up``, ``down``, ``left``, ``right`` (also ``u``/``d``/``l``/``r``): move, pushing a box that is in
      the way; ``push up`` ... is the same.
    - ``move up`` ...: move without pushing (a box in the way makes it impossible), as gym-sokoban's "move".
    - gym-sokoban's numeric actions as text: ``1``-``4`` push up/down/left/right, ``5``-``8`` move
      up/down/left/right. gym-sokoban's ``0`` (no-op) is *not* accepted here: it is an invalid action, like
      any other text that does not change the state.

    Moving into a wall, pushing a box into a wall or another box, and unknown text are invalid actions: the
    state is unchanged, the feedback says why, ``info["action_valid"]`` is False, and the step still costs
    the step penalty. ``info["admissible_actions"]`` lists the directions that would move the player.

Reward (as gym-sokoban):
    -0.1 per step (invalid ones included); +1 for pushing a box onto a target; -1 for pushing one off;
    +10 when every box is on a target. With ``end_on_dead_end``, ``-dead_end_penalty`` on the step that ends
    the episode in a dead end.

Episode end:
    Terminated when every box is on a target (``info["won"]``), or with ``end_on_dead_end`` when the room
    provably cannot be solved any more. Truncated after ``max_steps`` steps (the registered
    ``hiergym/Sokoban-v0`` also has ``max_episode_steps=100``: pass ``max_episode_steps`` to ``gymnasium.make``
    together with a larger ``max_steps``).

Info (besides the contract's ``task``, ``admissible_actions``, ``won``, ``action_valid``, ``state_key``):
    ``boxes_on_target``, ``num_boxes``; ``dead_end``: the state provably cannot be solved any more (a box
    off target on a *dead square*, from which no sequence of pushes reaches any target, or a 2x2 block of
    walls and boxes holding a box off target). It is sound (never True for a solvable state) but not
    complete: ``expert_plan()`` returning ``None`` is the exact test. At reset only:
    ``optimal_solution_length`` (the fewest pushes, or with ``expert_metric="moves"`` the fewest moves, that
    solve the room; ``None`` when a given board is unsolvable), ``optimal_solution_metric`` (``"pushes"``
    or ``"moves"``) and ``expert_plan_length`` (moves, i.e. env steps, of the expert's plan).

    ``state_key`` is ``"<room id>|p=r,c|b=r,c;r,c..."``: the room (walls and targets), the exact player
    position and the sorted box positions; no step count.

Expert:
    ``expert_plan()`` returns a plan from the current state, or ``None`` from a state that cannot be
    solved. By default it is *push-optimal* (fewest pushes; A* over (boxes, player region) with the
    cheapest box-to-target matching by push distance as heuristic, dead-square and 2x2-freeze pruning;
    the walks between pushes are shortest walks, so plans are short in moves too but not always shortest).
    With ``expert_metric="moves"`` it is *move-optimal* (fewest env steps; A* whose edges cost the walk plus
    the push), which is exact for the step count but an order of magnitude slower on large rooms.

Splits (``reset(options={"split": ...})``):
    Every room layout (size, walls and targets) has a fingerprint. Train uses the layouts whose fingerprint
    is not 0 mod 8; ``eval_in`` and ``eval_out`` only the other eighth, so no evaluation layout is ever seen
    in training, whatever the boxes' start (even for 6x6 rooms with one box, where repeats are common).
    Sokoban has no structural hold-out, so ``eval_out`` is a harder distribution instead: its rooms need at
    least ``2 * num_boxes + 1`` pushes (train and ``eval_in``: ``num_boxes + 1``), from reverse plays twice
    as long.

Arguments:
    dim_room: ``(height, width)`` of the room, border walls included (default ``(6, 6)``; tested up to
        ``(12, 12)``).
    num_boxes: boxes (= targets) per room (default 1; tested up to 4).
    max_steps: the env's own step limit (default 100; ``None`` for none).
    render_mode: ``"ansi"`` (the text board) or ``"rgb_array"`` (16-pixel tiles drawn with numpy).
    expert_metric: what the expert and ``optimal_solution_length`` minimise: ``"pushes"`` (default) or
        ``"moves"``.
    end_on_dead_end: terminate (not won) as soon as ``info["dead_end"]`` holds, with ``dead_end_penalty``
        subtracted from that step's reward (default off, as gym-sokoban). Success is unchanged (the test is
        sound: such a room could never be won); for training, it stops the steps that can no longer matter
        from filling the batch.
    dead_end_penalty: subtracted when ``end_on_dead_end`` ends an episode (default 2.0, what 20 more steps
        would cost in step penalties, so that running into a dead end never beats trying to the limit).

Hand-built rooms: ``SokobanEnv.from_board(text)`` makes an env whose every reset loads that board, and
``reset(options={"board": text})`` loads one for one episode. Boards use the symbols above or the standard
XSB ones (``#`` wall, space/``-`` floor, ``.`` target, ``$`` box, ``*`` box on target, ``@`` player,
``+`` player on target). Lines are padded to a rectangle, a missing border of walls is added, and floor
the player can never reach (outside the room) becomes wall.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.envs.core import (
    NOTHING_HAPPENS,
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)

ENV_NAME = "hiergym/Sokoban-v0"
TASK = "Push every box (X) onto a target (O)."
LEGEND = "Legend: # wall, _ floor, O target, X box, V box on target, P player, S player on target."

#: Directions in gym-sokoban's order (its actions 1-4 push and 5-8 move in this order).
DIRECTIONS = ("up", "down", "left", "right")
_DIR_VECTORS = ((-1, 0), (1, 0), (0, -1), (0, 1))

STEP_PENALTY = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_REWARD = -1.0
SOLVED_REWARD = 10.0

#: Which split a room belongs to: train rooms have ``fingerprint % SPLIT_MODULUS != 0``.
SPLIT_MODULUS = 8
#: Rooms whose optimal solution needs more A* expansions than this are redrawn by the generator. This bounds
#: generation time: with the push metric it never triggered on 200 12x12 rooms with 4 boxes; with the move
#: metric it redraws about one such room in ten.
GENERATION_EXPANSION_LIMIT = 5_000
#: Reverse plays tried per carved room; the generator keeps the best-scoring start (more: harder rooms).
REVERSE_PLAYS = 3
#: Heuristic value meaning "no matching of boxes to targets exists".
_UNMATCHABLE = 1 << 40

# Board symbols: ours first (what observations use), then the standard XSB ones accepted by the parser.
_WALL, _FLOOR, _TARGET = 0, 1, 2
_SYMBOLS: dict[str, tuple[int, bool, bool]] = {  # char -> (tile, has box, has player)
    "#": (_WALL, False, False),
    "_": (_FLOOR, False, False),
    "O": (_TARGET, False, False),
    "X": (_FLOOR, True, False),
    "V": (_TARGET, True, False),
    "P": (_FLOOR, False, True),
    "S": (_TARGET, False, True),
    " ": (_FLOOR, False, False),
    "-": (_FLOOR, False, False),
    ".": (_TARGET, False, False),
    "$": (_FLOOR, True, False),
    "*": (_TARGET, True, False),
    "@": (_FLOOR, False, True),
    "+": (_TARGET, False, True),
}

_ACTION_WORDS: dict[str, tuple[int, bool]] = {}  # normalised text -> (direction, may push)
for _d, _name in enumerate(DIRECTIONS):
    _ACTION_WORDS[_name] = (_d, True)
    _ACTION_WORDS[_name[0]] = (_d, True)
    _ACTION_WORDS[f"push {_name}"] = (_d, True)
    _ACTION_WORDS[f"move {_name}"] = (_d, False)
    _ACTION_WORDS[str(_d + 1)] = (_d, True)
    _ACTION_WORDS[str(_d + 5)] = (_d, False)


def _bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _shift(mask: int, delta: int) -> int:
    return mask << delta if delta >= 0 else mask >> -delta


@functools.lru_cache(maxsize=8)
def _permutations(n: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(n)))


@functools.lru_cache(maxsize=64)
def _squares(height: int, width: int) -> tuple[tuple[int, ...], ...]:
    """For each cell, the masks of the 2x2 squares that contain it (for freeze deadlocks)."""
    squares: list[list[int]] = [[] for _ in range(height * width)]
    for r in range(height - 1):
        for c in range(width - 1):
            cells = (r * width + c, r * width + c + 1, (r + 1) * width + c, (r + 1) * width + c + 1)
            mask = sum(1 << i for i in cells)
            for i in cells:
                squares[i].append(mask)
    return tuple(tuple(s) for s in squares)


class Room:
    """The static part of a level (walls and targets) with what the solver precomputes from it.

    Cells are flat indices ``r * width + c``; sets of cells are Python ints used as bitsets, so the player's
    reachable region is a handful of shifts and masks. The room's border is always wall, so a shift never
    wraps from one row into a reachable cell of the next.
    """

    def __init__(self, tiles: np.ndarray) -> None:
        self.height, self.width = (int(n) for n in tiles.shape)
        self.size = self.height * self.width
        flat = tiles.reshape(-1)
        self.floor = sum(1 << int(i) for i in np.flatnonzero(flat != _WALL))
        self.targets = sum(1 << int(i) for i in np.flatnonzero(flat == _TARGET))
        self.walls = ((1 << self.size) - 1) & ~self.floor
        self.num_targets = self.targets.bit_count()
        self.deltas = (-self.width, self.width, -1, 1)
        #: Per target, the push distance of every cell to it; and to the nearest target, with that target.
        self.distance_to = [self._push_distances(1 << t) for t in _bits(self.targets)]
        self.push_distance = [-1] * self.size
        self.nearest_target = [-1] * self.size
        for t, dist in enumerate(self.distance_to):
            for cell, d in enumerate(dist):
                if d >= 0 and (self.push_distance[cell] < 0 or d < self.push_distance[cell]):
                    self.push_distance[cell], self.nearest_target[cell] = d, t
        #: Per cell, its push distance to each target (unreachable: _UNMATCHABLE); filled on demand.
        self._cost_rows: dict[int, tuple[int, ...]] = {}
        self.matchings = _permutations(self.num_targets) if self.num_targets <= 6 else ()
        #: Cells from which a box can still reach some target ("live"); every other floor cell is dead.
        self.live = sum(1 << c for c, dist in enumerate(self.push_distance) if dist >= 0)
        self.squares_of = _squares(self.height, self.width)
        #: A hash of the layout (size, walls, targets): names the room in state keys and picks its split.
        self.fingerprint = layout_fingerprint(self.height, self.width, self.floor, self.targets)
        self.id = f"{self.fingerprint & 0xFFFFFFFF:08x}"
        base = np.where(flat == _WALL, "#", np.where(flat == _TARGET, "O", "_"))
        self._base_chars = base.tolist()

    def is_floor(self, cell: int) -> bool:
        return bool(self.floor >> cell & 1)

    def _push_distances(self, sources: int) -> list[int]:
        """Fewest pushes moving a box from each cell onto the nearest cell of ``sources`` (-1: never).

        A breadth-first search of *pulls* from the sources, in the room without other boxes: a box on ``c``
        can be pushed onto ``c - d`` when ``c`` and ``c + d`` are floor (the player stands on ``c + d``).
        """
        dist = [-1] * self.size
        queue = deque(_bits(sources))
        for cell in queue:
            dist[cell] = 0
        while queue:
            cell = queue.popleft()
            for delta in self.deltas:
                box, stand = cell + delta, cell + 2 * delta
                if dist[box] < 0 and self.is_floor(box) and 0 <= stand < self.size and self.is_floor(stand):
                    dist[box] = dist[cell] + 1
                    queue.append(box)
        return dist

    # ----------------------------------------------------------------------------------- deadlocks
    def frozen_at(self, cell: int, boxes: int) -> bool:
        """A 2x2 block of walls and boxes around ``cell`` holds a box off target (no box in it can move)."""
        blocked = self.walls | boxes
        for square in self.squares_of[cell]:
            if square & ~blocked == 0 and square & boxes & ~self.targets:
                return True
        return False

    def is_dead_end(self, boxes: int) -> bool:
        """Sound deadlock test: a box off target on a dead square, or in a frozen 2x2 block."""
        if boxes & ~self.live:
            return True
        return any(self.frozen_at(b, boxes) for b in _bits(boxes & ~self.targets))

    # ----------------------------------------------------------------------------------- player moves
    def walk(self, start: int, goal: int, boxes: int) -> list[int]:
        """Directions of a shortest walk from ``start`` to ``goal`` around the boxes (goal reachable)."""
        if start == goal:
            return []
        free = self.floor & ~boxes
        came: dict[int, tuple[int, int]] = {start: (-1, -1)}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            for d, delta in enumerate(self.deltas):
                nxt = cell + delta
                if nxt not in came and free >> nxt & 1:
                    came[nxt] = (cell, d)
                    if nxt == goal:
                        path = []
                        while nxt != start:
                            nxt, d = came[nxt]
                            path.append(d)
                        return path[::-1]
                    queue.append(nxt)
        raise ValueError(f"cell {goal} is not reachable from {start}")

    def _cost_row(self, cell: int) -> tuple[int, ...]:
        row = tuple(dist[cell] if dist[cell] >= 0 else _UNMATCHABLE for dist in self.distance_to)
        self._cost_rows[cell] = row
        return row

    def heuristic(self, boxes: int) -> int:
        """Lower bound on the pushes left: a cheapest matching of boxes to distinct targets by push distance.

        Admissible and consistent (one push changes one box's distances by at most one). Returns a value of
        at least :data:`_UNMATCHABLE` when no matching exists (some box can reach no free target): a deadlock.
        """
        cells = list(_bits(boxes))
        nearest = self.nearest_target
        if len({nearest[c] for c in cells}) == len(cells) and -1 not in (nearest[c] for c in cells):
            return sum(self.push_distance[c] for c in cells)  # nearest targets are distinct: optimal matching
        if len(cells) != self.num_targets or len(cells) > 6:  # n! matchings: fall back to the sum of minima
            return sum(self.push_distance[c] if self.push_distance[c] >= 0 else _UNMATCHABLE for c in cells)
        rows = [self._cost_rows.get(c) or self._cost_row(c) for c in cells]
        return min(sum(row[t] for row, t in zip(rows, perm, strict=True)) for perm in self.matchings)


class SearchLimitExceeded(RuntimeError):
    """The solver expanded more states than it was allowed to."""


METRICS = ("pushes", "moves")


def solve(
    room: Room, player: int, boxes: int, metric: str = "pushes", max_expansions: int | None = None
) -> list[int] | None:
    """An optimal solution (list of directions) from ``(player, boxes)``, or ``None`` if there is none.

    ``metric="pushes"``: fewest pushes (the walks between pushes are shortest walks, so the plan is short in
    moves too, but not always the shortest). ``metric="moves"``: fewest moves (env steps); an order of
    magnitude slower on large rooms, because walking costs make many states tie. Raises
    :class:`SearchLimitExceeded` past ``max_expansions`` expanded states.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    goal = room.targets
    if boxes == goal:
        return []
    if boxes.bit_count() != room.num_targets or room.is_dead_end(boxes):
        return None
    if metric == "pushes":
        return _solve_pushes(room, player, boxes, max_expansions)
    return _solve_moves(room, player, boxes, max_expansions)


def _region(room: Room, player: int, boxes: int) -> int:
    """The cells the player can walk to (a bitset)."""
    free = room.floor & ~boxes
    w = room.width
    seen = frontier = 1 << player
    while frontier:
        frontier = ((frontier << 1) | (frontier >> 1) | (frontier << w) | (frontier >> w)) & free & ~seen
        seen |= frontier
    return seen


def _solve_pushes(room: Room, player: int, boxes: int, max_expansions: int | None) -> list[int] | None:
    """Push-optimal A*: states are (boxes, player's region, named by its lowest cell), edges single pushes.

    The heuristic (cheapest matching of boxes to distinct targets by push distance) is consistent, so the
    first goal popped has the fewest pushes. Among equal push counts, the state reached with fewer moves
    is kept, which keeps the walks short.
    """
    goal = room.targets
    start_player = player
    h0 = room.heuristic(boxes)
    if h0 >= _UNMATCHABLE:
        return None
    deltas = room.deltas
    free_live = room.floor & room.live
    frozen_at = room.frozen_at
    push, pop = heapq.heappush, heapq.heappop
    pushes_left: dict[int, int] = {}
    region = _region(room, player, boxes)
    start = (boxes, region & -region)
    best: dict[tuple[int, int], tuple[int, int]] = {start: (0, 0)}  # key -> (pushes, moves)
    parent: dict[tuple[int, int], tuple[tuple[int, int], int, int]] = {}
    heap: list[tuple[int, int, int, int, int]] = [(h0, 0, 0, boxes, player)]
    expansions = 0
    while heap:
        _, neg_pushes, moves, boxes, player = pop(heap)
        pushes = -neg_pushes
        region = _region(room, player, boxes)
        key = (boxes, region & -region)
        if best[key] < (pushes, moves):
            continue  # stale entry
        if boxes == goal:
            return _unwind(room, start, key, parent, start_player)
        expansions += 1
        if max_expansions is not None and expansions > max_expansions:
            raise SearchLimitExceeded(f"more than {max_expansions} states expanded")
        target_free = free_live & ~boxes
        for d, delta in enumerate(deltas):
            pushable = _shift(boxes & _shift(target_free, -delta), -delta) & region
            while pushable:
                low = pushable & -pushable
                pushable ^= low
                cell = low.bit_length() - 1
                box = cell + delta
                new_box = box + delta
                new_boxes = boxes ^ (1 << box) | (1 << new_box)
                if frozen_at(new_box, new_boxes):
                    continue
                h = pushes_left.get(new_boxes)
                if h is None:
                    h = pushes_left[new_boxes] = room.heuristic(new_boxes)
                if h >= _UNMATCHABLE:
                    continue
                new_region = _region(room, box, new_boxes)
                new_key = (new_boxes, new_region & -new_region)
                # Moves so far, approximately: a walk of at least the Manhattan distance, plus the push.
                new_moves = moves + _manhattan(room.width, player, cell) + 1
                if (pushes + 1, new_moves) >= best.get(new_key, (_UNMATCHABLE, 0)):
                    continue
                best[new_key] = (pushes + 1, new_moves)
                parent[new_key] = (key, cell, d)
                push(heap, (pushes + 1 + h, -(pushes + 1), new_moves, new_boxes, box))
    return None


def _manhattan(width: int, a: int, b: int) -> int:
    return abs(a // width - b // width) + abs(a % width - b % width)


def _solve_moves(room: Room, player: int, boxes: int, max_expansions: int | None) -> list[int] | None:
    """Move-optimal A* (see :func:`solve`).

    A* whose edges are pushes: from a state (boxes, exact player cell), every box the player can walk behind
    and push onto a live cell is a successor costing (walk length + 1) moves; the player ends where the box
    was. Pushes that freeze a 2x2 block are pruned. The heuristic, a lower bound on the moves left, is the
    cheapest matching of boxes to targets by push distance plus the walk to the nearest box off target
    (Manhattan distance - 1); it is consistent, so the first goal popped is optimal in moves.
    """
    goal = room.targets
    start_player = player
    h0 = room.heuristic(boxes)
    if h0 >= _UNMATCHABLE:
        return None
    h0 += _walk_bound(room, player, boxes)
    deltas = room.deltas
    floor, width = room.floor, room.width
    free_live = floor & room.live
    frozen_at = room.frozen_at
    push, pop = heapq.heappush, heapq.heappop
    pushes_left: dict[int, int] = {}  # heuristic cache per box configuration
    start = (boxes, player)
    best_cost: dict[tuple[int, int], int] = {start: 0}
    parent: dict[tuple[int, int], tuple[tuple[int, int], int, int]] = {}
    heap: list[tuple[int, int, int, int]] = [(h0, 0, boxes, player)]
    expansions = 0
    while heap:
        _, neg_cost, boxes, player = pop(heap)
        cost = -neg_cost
        if best_cost[(boxes, player)] < cost:
            continue  # stale entry
        if boxes == goal:
            return _unwind(room, start, (boxes, player), parent, start_player)
        expansions += 1
        if max_expansions is not None and expansions > max_expansions:
            raise SearchLimitExceeded(f"more than {max_expansions} states expanded")
        free = floor & ~boxes
        target_free = free_live & ~boxes
        # stand[d]: cells the player must reach to push some box in direction d onto a free live cell.
        stand = [_shift(boxes & _shift(target_free, -delta), -delta) & free for delta in deltas]
        wanted = stand[0] | stand[1] | stand[2] | stand[3]
        # Breadth-first layers of the player's walk, stopped once every push position is reached.
        seen = frontier = 1 << player
        steps = 0
        while frontier and wanted:
            hits = frontier & wanted
            if hits:
                wanted &= ~hits
                for d in range(4):
                    pushable = hits & stand[d]
                    delta = deltas[d]
                    while pushable:
                        low = pushable & -pushable
                        pushable ^= low
                        cell = low.bit_length() - 1
                        box = cell + delta
                        new_box = box + delta
                        new_boxes = boxes ^ (1 << box) | (1 << new_box)
                        if frozen_at(new_box, new_boxes):
                            continue
                        state = (new_boxes, box)
                        new_cost = cost + steps + 1
                        if new_cost >= best_cost.get(state, _UNMATCHABLE):
                            continue
                        h = pushes_left.get(new_boxes)
                        if h is None:
                            h = pushes_left[new_boxes] = room.heuristic(new_boxes)
                        if h >= _UNMATCHABLE:
                            continue
                        if goal >> new_box & 1 and new_boxes != goal:  # the player must walk to another box
                            h += _walk_bound(room, box, new_boxes)
                        best_cost[state] = new_cost
                        parent[state] = ((boxes, player), cell, d)
                        push(heap, (new_cost + h, -new_cost, new_boxes, box))
            frontier = ((frontier << 1) | (frontier >> 1) | (frontier << width) | (frontier >> width)) & free & ~seen
            seen |= frontier
            steps += 1
    return None


def _walk_bound(room: Room, player: int, boxes: int) -> int:
    """Moves the player needs at least to stand next to some box off target (0 when all are on targets)."""
    w = room.width
    r, c = divmod(player, w)
    return min(
        (abs(b // w - r) + abs(b % w - c) - 1 for b in _bits(boxes & ~room.targets)),
        default=0,
    )


def _unwind(room: Room, start: tuple, end: tuple, parent: dict, player: int) -> list[int]:
    """Moves of the push chain from ``start`` to ``end``: parent[key] = (previous key, stand cell, direction),
    where a key's first item is the box bitset; the walks between pushes are shortest walks."""
    chain = []
    key = end
    while key != start:
        previous, stand, d = parent[key]
        chain.append((previous[0], stand, d))
        key = previous
    plan: list[int] = []
    for boxes, stand, d in reversed(chain):
        plan += room.walk(player, stand, boxes)
        plan.append(d)
        player = stand + room.deltas[d]
    return plan


# --------------------------------------------------------------------------------------------- generator
#: Brushes stamped by the room-carving walk, as (row, column) offsets from the walker (gym-sokoban's 3x3
#: shapes: lines, corners, a square, a dot).
_BRUSHES = (
    ((0, -1), (0, 0), (0, 1)),
    ((-1, 0), (0, 0), (1, 0)),
    ((0, -1), (0, 0), (1, 0)),
    ((0, -1), (0, 0), (1, -1), (1, 0)),
    ((0, 0), (0, 1), (1, 0)),
    ((0, 0),),
)


def carve_room(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Floor mask of a connected room: a random walk inside the border walls stamping small brushes."""
    steps = int(1.7 * (height + width))  # gym-sokoban's env default (num_gen_steps)
    r, c = int(rng.integers(1, height - 1)), int(rng.integers(1, width - 1))
    turns = (rng.random(steps) < 0.35).tolist()
    new_dirs = rng.integers(0, 4, size=steps).tolist()
    brushes = rng.integers(0, len(_BRUSHES), size=steps).tolist()
    dr, dc = _DIR_VECTORS[new_dirs[0]]
    cells: set[tuple[int, int]] = set()
    for turn, new_dir, brush in zip(turns, new_dirs, brushes, strict=True):
        if turn:
            dr, dc = _DIR_VECTORS[new_dir]
        cells.update((r + br, c + bc) for br, bc in _BRUSHES[brush])
        r = min(max(r + dr, 1), height - 2)
        c = min(max(c + dc, 1), width - 2)
    floor = np.zeros((height, width), dtype=bool)
    rows, cols = zip(*((a, b) for a, b in cells if 0 < a < height - 1 and 0 < b < width - 1), strict=True)
    floor[list(rows), list(cols)] = True
    return floor


def reverse_play(
    room: Room, rng: np.random.Generator, player: int, num_pulls: int
) -> tuple[int, int, int] | None:
    """Play backwards from the solved room (boxes on targets) by pulling boxes; ``(player, boxes, score)``.

    Each reverse step walks the player anywhere in its region and pulls one adjacent box one cell (the player
    steps back, the box follows): the exact reverse of a push, so every state reached is solvable. Pulls
    often continue straight on, prefer boxes still on their targets (so every box gets moved), and otherwise
    mostly move a box away from its own target (so boxes travel). Of the states visited with every box off target, the one with the best score is returned,
    gym-sokoban's score: total box displacement from its own target times the number of switches between
    pulled boxes. The player then starts from a random cell of its region. ``None`` if no state qualified.
    """
    w = room.width
    deltas = room.deltas
    origin = list(_bits(room.targets))
    position = list(origin)
    boxes = room.targets
    best: tuple[int, int] | None = None
    best_score = 0
    last_pulled, last_d, switches = -1, -1, 0
    uniforms = rng.random((num_pulls, 3))
    for step in range(num_pulls):
        free = room.floor & ~boxes
        region = _region(room, player, boxes)
        # pulls[d]: cells p of the region with a box on p - delta and a free cell p + delta to step back to.
        pulls = [region & _shift(boxes, delta) & _shift(free, -delta) for delta in deltas]
        options = [(p, d) for d in range(4) for p in _bits(pulls[d])]
        if not options:
            break
        u_straight, u_targets, u_pick = uniforms[step]
        straight = [(p, d) for p, d in options if d == last_d and p - deltas[d] == position[last_pulled]]
        on_target = [(p, d) for p, d in options if (room.targets >> (p - deltas[d])) & 1]
        if straight and u_straight < 0.6:
            options = straight
        elif on_target and u_targets < 0.7:
            options = on_target
        else:
            away = [(p, d) for p, d in options if _manhattan(w, p, origin[position.index(p - deltas[d])])
                    > _manhattan(w, p - deltas[d], origin[position.index(p - deltas[d])])]
            if away and u_targets < 0.85:
                options = away
        p, d = options[int(u_pick * len(options))]
        box = p - deltas[d]
        index = position.index(box)
        position[index] = p
        boxes ^= (1 << box) | (1 << p)
        player = p + deltas[d]
        if index != last_pulled:
            last_pulled, switches = index, switches + 1
        last_d = d
        if boxes & room.targets == 0:
            displacement = sum(abs(a // w - b // w) + abs(a % w - b % w) for a, b in zip(position, origin, strict=True))
            score = displacement * switches
            if score > best_score:
                best_score, best = score, (player, boxes)
    if best is None:
        return None
    player, boxes = best
    cells = list(_bits(_region(room, player, boxes)))
    return cells[int(rng.integers(len(cells)))], boxes, best_score


@dataclass(frozen=True)
class Level:
    """A room with its initial state and, when known, an optimal plan (list of directions)."""

    room: Room
    player: int
    boxes: int
    plan: tuple[int, ...] | None


def layout_fingerprint(height: int, width: int, floor: int, targets: int) -> int:
    """A 64-bit hash of a room layout (floor and target bitsets), stable across processes."""
    key = f"{height}x{width}:{floor:x}:{targets:x}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def is_eval_layout(fingerprint: int) -> bool:
    """Layouts reserved for the evaluation splits (one in :data:`SPLIT_MODULUS`); train never uses them."""
    return fingerprint % SPLIT_MODULUS == 0


def generate_level(
    rng: np.random.Generator,
    dim_room: tuple[int, int] = (6, 6),
    num_boxes: int = 1,
    *,
    walk_scale: float = 1.0,
    eval_rooms: bool | None = None,
    metric: str = "pushes",
    min_pushes: int | None = None,
    max_tries: int = 1000,
) -> Level:
    """A random solvable level with its optimal solution in ``metric`` (see :func:`solve`).

    ``eval_rooms``: ``False`` keeps only training layouts, ``True`` only evaluation layouts (see
    :func:`is_eval_layout`), ``None`` any. ``walk_scale`` multiplies the number of reverse-play pulls.
    Rooms solved with fewer than ``min_pushes`` pushes (default ``num_boxes + 1``) are rejected as trivial.
    """
    height, width = dim_room
    interior = (height - 2) * (width - 2)
    # Small rooms saturate quickly (a 6x6 room has 16 interior cells): fewer pulls there, same difficulty.
    pulls = int(walk_scale * (8 + 12 * num_boxes) * min(1.0, max(0.5, interior / 32)))
    for _ in range(max_tries):
        floor_mask = carve_room(rng, height, width)
        floor_cells = np.flatnonzero(floor_mask)
        # Enough room to move boxes around: boxes + player + slack, and not a single corridor.
        if len(floor_cells) < min(num_boxes + 4, interior) or len(floor_cells) < 2 * num_boxes + 2:
            continue
        chosen = rng.choice(floor_cells, size=num_boxes + 1, replace=False)
        if eval_rooms is not None:  # split by layout, before the costlier work
            floor_bits = sum(1 << int(i) for i in floor_cells)
            target_bits = sum(1 << int(i) for i in chosen[:num_boxes])
            if is_eval_layout(layout_fingerprint(height, width, floor_bits, target_bits)) != eval_rooms:
                continue
        tiles = np.where(floor_mask, _FLOOR, _WALL).reshape(-1)
        tiles[chosen[:num_boxes]] = _TARGET
        room = Room(tiles.reshape(height, width))
        # Several reverse plays per room, keeping the best-scoring start: harder rooms, and a room costs more
        # to build than a play.
        best = None
        for _ in range(REVERSE_PLAYS):
            state = reverse_play(room, rng, int(chosen[-1]), pulls)
            if state is None:
                break
            if best is None or state[2] > best[2]:
                best = state
        if best is None:
            continue
        player, boxes, _ = best
        try:
            plan = solve(room, player, boxes, metric, max_expansions=GENERATION_EXPANSION_LIMIT)
        except SearchLimitExceeded:
            continue
        if plan is None:  # impossible by construction; a bug if it happens
            raise AssertionError("reverse play produced an unsolvable room")
        if count_pushes(room, player, boxes, plan) < (min_pushes or num_boxes + 1):
            continue
        return Level(room, player, boxes, tuple(plan))
    raise RuntimeError(
        f"could not generate a {height}x{width} room with {num_boxes} boxes in {max_tries} tries; "
        "use a larger dim_room or fewer boxes"
    )


def count_pushes(room: Room, player: int, boxes: int, plan: Sequence[int]) -> int:
    """How many of the plan's moves push a box."""
    pushes = 0
    for d in plan:
        player += room.deltas[d]
        if boxes >> player & 1:
            boxes ^= (1 << player) | (1 << (player + room.deltas[d]))
            pushes += 1
    return pushes


def parse_board(text: str) -> Level:
    """A level from a board drawn with hiergym's or XSB symbols (see the module docstring).

    Raises ``ValueError`` naming the problem (unknown symbol, not exactly one player, boxes != targets).
    """
    if not isinstance(text, str):
        raise ValueError(f"a board must be a string, got {type(text).__name__}")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError("the board is empty")
    height, width = len(lines) + 2, max(len(line) for line in lines) + 2
    tiles = np.full((height, width), _WALL, dtype=np.int8)
    boxes_rc, players = [], []
    for r, line in enumerate(lines, start=1):
        for c, ch in enumerate(line, start=1):
            if ch not in _SYMBOLS:
                raise ValueError(
                    f"unknown board symbol {ch!r} at line {r}, column {c}; use # _ O X V P S (or XSB # - . $ * @ +)"
                )
            tile, box, player = _SYMBOLS[ch]
            tiles[r, c] = tile
            if box:
                boxes_rc.append((r, c))
            if player:
                players.append((r, c))
    if len(players) != 1:
        raise ValueError(f"the board needs exactly one player (P, S, @ or +), found {len(players)}")
    num_targets = int((tiles == _TARGET).sum())
    if not boxes_rc or len(boxes_rc) != num_targets:
        raise ValueError(f"the board needs as many boxes as targets, at least one; found {len(boxes_rc)} boxes "
                         f"and {num_targets} targets")
    # Floor outside the room (not connected to the player even through boxes) becomes wall.
    reach = np.zeros_like(tiles, dtype=bool)
    queue = deque([players[0]])
    reach[players[0]] = True
    while queue:
        r, c = queue.popleft()
        for dr, dc in _DIR_VECTORS:
            nr, nc = r + dr, c + dc
            if tiles[nr, nc] != _WALL and not reach[nr, nc]:
                reach[nr, nc] = True
                queue.append((nr, nc))
    if any(not reach[rc] for rc in boxes_rc) or int((reach & (tiles == _TARGET)).sum()) != num_targets:
        raise ValueError("every box and target must be inside the player's room")
    tiles[~reach] = _WALL
    # Drop the padding ring again where the board already had its own border of walls.
    rows = np.flatnonzero(reach.any(axis=1))
    cols = np.flatnonzero(reach.any(axis=0))
    tiles = tiles[rows[0] - 1 : rows[-1] + 2, cols[0] - 1 : cols[-1] + 2]
    offset_r, offset_c = int(rows[0]) - 1, int(cols[0]) - 1
    room = Room(tiles)

    def flat(rc: tuple[int, int]) -> int:
        return (rc[0] - offset_r) * room.width + rc[1] - offset_c

    return Level(room, flat(players[0]), sum(1 << flat(rc) for rc in boxes_rc), None)


# --------------------------------------------------------------------------------------------- rendering
TILE_PIXELS = 16


def _make_sprites(size: int = TILE_PIXELS) -> np.ndarray:
    """Tiles indexed by code: 0 wall, 1 floor, 2 target, 3 box, 4 box on target, 5 player, 6 player on target."""
    yy, xx = np.mgrid[0:size, 0:size]
    floor_color, wall_color, mortar = (60, 60, 60), (150, 72, 40), (110, 110, 110)
    sprites = np.zeros((7, size, size, 3), dtype=np.uint8)
    wall = np.empty((size, size, 3), dtype=np.uint8)
    wall[:] = wall_color
    half = size // 2
    mortar_mask = (yy % half == 0) | ((xx + (yy // half) * half // 2) % size == 0)
    wall[mortar_mask] = mortar
    sprites[0] = wall
    sprites[1] = floor_color
    edge = (yy <= 2) | (yy >= size - 3) | (xx <= 2) | (xx >= size - 3)
    ring = edge & ~((yy <= 1) | (yy >= size - 2) | (xx <= 1) | (xx >= size - 2))
    target = sprites[1].copy()
    target[ring] = (220, 50, 50)
    sprites[2] = target
    box_edge = (yy <= 1) | (yy >= size - 2) | (xx <= 1) | (xx >= size - 2)
    cross = (abs(yy - xx) <= 0) | (abs(yy + xx - (size - 1)) <= 0)
    for code, body in ((3, (205, 150, 60)), (4, (80, 190, 90))):
        sprite = np.empty((size, size, 3), dtype=np.uint8)
        sprite[:] = body
        sprite[cross] = (120, 80, 30) if code == 3 else (40, 110, 50)
        sprite[box_edge] = (90, 55, 20) if code == 3 else (30, 90, 40)
        sprites[code] = sprite
    disc = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 <= (size * 0.34) ** 2
    for code, under in ((5, 1), (6, 2)):
        sprite = sprites[under].copy()
        sprite[disc] = (70, 130, 230)
        sprites[code] = sprite
    return sprites


_SPRITES = _make_sprites()
_CHAR_CODES = {"#": 0, "_": 1, "O": 2, "X": 3, "V": 4, "P": 5, "S": 6}


# --------------------------------------------------------------------------------------------- environment
class SokobanEnv(gym.Env[str, str]):
    """Sokoban with text observations and actions; see the module docstring for the full description."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        max_steps: int | None = 100,
        render_mode: str | None = None,
        expert_metric: str = "pushes",
        end_on_dead_end: bool = False,
        dead_end_penalty: float = 2.0,
    ) -> None:
        dim = tuple(int(n) for n in dim_room)
        if len(dim) != 2 or min(dim) < 5:
            raise ValueError(f"dim_room must be (height, width) with both at least 5, got {dim_room!r}")
        if not isinstance(num_boxes, int | np.integer) or num_boxes < 1:
            raise ValueError(f"num_boxes must be a positive integer, got {num_boxes!r}")
        if num_boxes > (dim[0] - 2) * (dim[1] - 2) // 4:
            raise ValueError(f"{num_boxes} boxes do not fit a {dim[0]}x{dim[1]} room; use a larger dim_room")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        if expert_metric not in METRICS:
            raise ValueError(f"expert_metric must be one of {METRICS}, got {expert_metric!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.dim_room = dim
        self.num_boxes = int(num_boxes)
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.expert_metric = expert_metric
        self.end_on_dead_end = bool(end_on_dead_end)
        self.dead_end_penalty = float(dead_end_penalty)
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self._fixed_board: Level | None = None
        self._level: Level | None = None
        self._room: Room | None = None
        self._player = 0
        self._boxes = 0
        self._steps = 0
        self._feedback = ""
        # Expert plans: state -> (plan, index into it); any suffix of an optimal plan is optimal.
        self._plans: dict[tuple[int, int], tuple[tuple[int, ...], int]] = {}

    @classmethod
    def from_board(
        cls,
        board: str,
        max_steps: int | None = 100,
        render_mode: str | None = None,
        expert_metric: str = "pushes",
        **kwargs: Any,
    ) -> SokobanEnv:
        """An env whose every reset loads ``board`` (hiergym or XSB symbols); ``ValueError`` if malformed.
        Other keyword arguments (``end_on_dead_end``, ...) are the constructor's."""
        level = parse_board(board)
        env = cls(max_steps=max_steps, render_mode=render_mode, expert_metric=expert_metric, **kwargs)
        env.dim_room = (level.room.height, level.room.width)
        env.num_boxes = level.boxes.bit_count()
        env._fixed_board = level
        return env

    # ----------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        split, _task_id, rng = select_task(ENV_NAME, self.np_random, options)
        board = (options or {}).get("board")
        if board is not None:
            level = parse_board(board)
        elif self._fixed_board is not None:
            level = self._fixed_board
        else:
            level = generate_level(
                rng,
                self.dim_room,
                self.num_boxes,
                walk_scale=2.0 if split == "eval_out" else 1.0,
                min_pushes=2 * self.num_boxes + 1 if split == "eval_out" else None,
                eval_rooms=split != "train",
                metric=self.expert_metric,
            )
        self._level = level
        self._room = level.room
        self._player, self._boxes = level.player, level.boxes
        self._steps = 0
        self._plans = {}
        plan = level.plan
        if plan is None:
            plan = self._solve()
            solved = Level(level.room, level.player, level.boxes, None if plan is None else tuple(plan))
            if level is self._fixed_board:  # solve a fixed board once, not at every reset
                self._fixed_board = solved
            self._level = level = solved
        else:
            self._remember_plan(plan)
        self._feedback = ""
        info = self._info(action_valid=True)
        if plan is None:
            info["optimal_solution_length"] = None
        elif self.expert_metric == "moves":
            info["optimal_solution_length"] = len(plan)
        else:
            info["optimal_solution_length"] = count_pushes(level.room, level.player, level.boxes, plan)
        info["optimal_solution_metric"] = self.expert_metric
        info["expert_plan_length"] = None if plan is None else len(plan)
        return self._observation(), info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._room is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        room = self._room
        self._steps += 1
        reward = STEP_PENALTY
        valid = False
        text = normalize_action(action)
        parsed = _ACTION_WORDS.get(text) if text is not None else None
        if parsed is None:
            self._feedback = f"{NOTHING_HAPPENS} Valid actions: up, down, left, right."
        else:
            d, may_push = parsed
            name = DIRECTIONS[d]
            delta = room.deltas[d]
            ahead = self._player + delta
            if not room.is_floor(ahead):
                self._feedback = f"{NOTHING_HAPPENS} A wall blocks the way {name}."
            elif self._boxes >> ahead & 1:
                beyond = ahead + delta
                if not may_push:
                    self._feedback = f"{NOTHING_HAPPENS} A box is in the way; 'move {name}' does not push."
                elif not room.is_floor(beyond) or self._boxes >> beyond & 1:
                    blocker = "a wall" if not room.is_floor(beyond) else "another box"
                    self._feedback = f"{NOTHING_HAPPENS} The box cannot be pushed {name}: {blocker} is behind it."
                else:
                    self._boxes ^= (1 << ahead) | (1 << beyond)
                    self._player = ahead
                    valid = True
                    on_before, on_after = room.targets >> ahead & 1, room.targets >> beyond & 1
                    reward += BOX_ON_TARGET_REWARD * (on_after and not on_before)
                    reward += BOX_OFF_TARGET_REWARD * (on_before and not on_after)
                    self._feedback = f"You pushed the box {name}."
            else:
                self._player = ahead
                valid = True
                self._feedback = f"You moved {name}."
        won = self._boxes == room.targets
        if won and valid:
            reward += SOLVED_REWARD
            self._feedback += " Every box is on a target: you solved the room!"
        info = self._info(action_valid=valid)
        terminated = won
        if self.end_on_dead_end and info["dead_end"]:
            # Nothing can be won from here: end now, at a cost so that ending early is no shortcut.
            terminated = True
            reward -= self.dead_end_penalty
            self._feedback += " A box is stuck where it can never reach a target: the room is lost."
        truncated = not terminated and self.max_steps is not None and self._steps >= self.max_steps
        return self._observation(), float(round(reward, 6)), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        if self._room is None:
            return None
        if self.render_mode == "rgb_array":
            return self.render_rgb()
        return self.render_text()

    # ----------------------------------------------------------------------------------------- views
    def render_text(self) -> str:
        """The grid, one row per line, in hiergym's symbols."""
        room = self._room
        assert room is not None
        chars = list(room._base_chars)
        for cell in _bits(self._boxes):
            chars[cell] = "V" if chars[cell] == "O" else "X"
        chars[self._player] = "S" if chars[self._player] == "O" else "P"
        w = room.width
        return "\n".join("".join(chars[r * w : (r + 1) * w]) for r in range(room.height))

    def render_rgb(self) -> np.ndarray:
        """The board as an ``(H*16, W*16, 3)`` uint8 image."""
        room = self._room
        assert room is not None
        grid = self.render_text().split("\n")
        codes = np.array([[_CHAR_CODES[ch] for ch in row] for row in grid], dtype=np.intp)
        tiles = _SPRITES[codes]  # (H, W, t, t, 3)
        h, w, t = room.height, room.width, TILE_PIXELS
        return tiles.transpose(0, 2, 1, 3, 4).reshape(h * t, w * t, 3)

    def _observation(self) -> str:
        on_target = (self._boxes & self._room.targets).bit_count()
        lines = [self._feedback] if self._feedback else []
        lines.append(f"{TASK} Boxes on targets: {on_target}/{self._boxes.bit_count()}.")
        lines.append(self.render_text())
        lines.append(LEGEND)
        return "\n".join(lines)

    def _info(self, *, action_valid: bool) -> dict[str, Any]:
        room = self._room
        won = self._boxes == room.targets
        return make_info(
            task=TASK,
            admissible_actions=self.admissible_actions(),
            won=won,
            action_valid=action_valid,
            state_key=self.state_key(),
            dead_end=not won and room.is_dead_end(self._boxes),
            boxes_on_target=(self._boxes & room.targets).bit_count(),
            num_boxes=self._boxes.bit_count(),
        )

    # ----------------------------------------------------------------------------------------- queries
    def admissible_actions(self) -> list[str]:
        """The directions that would move the player now (walking or pushing)."""
        room = self._room
        actions = []
        for name, delta in zip(DIRECTIONS, room.deltas, strict=True):
            ahead = self._player + delta
            if not room.is_floor(ahead):
                continue
            if self._boxes >> ahead & 1:
                beyond = ahead + delta
                if not room.is_floor(beyond) or self._boxes >> beyond & 1:
                    continue
            actions.append(name)
        return actions

    def state_key(self) -> str:
        w = self._room.width
        boxes = ";".join(f"{b // w},{b % w}" for b in _bits(self._boxes))
        return f"{self._room.id}|p={self._player // w},{self._player % w}|b={boxes}"

    @property
    def is_dead_end(self) -> bool:
        return self._boxes != self._room.targets and self._room.is_dead_end(self._boxes)

    def expert_plan(self) -> list[str] | None:
        """An optimal list of actions (in ``expert_metric``) solving the room from here; ``None`` if unsolvable."""
        if self._room is None:
            return None
        state = (self._boxes, self._player)
        if state not in self._plans:
            plan = self._solve()
            if plan is None:
                return None
        plan, index = self._plans[state]
        return [DIRECTIONS[d] for d in plan[index:]]

    def _solve(self) -> list[int] | None:
        plan = solve(self._room, self._player, self._boxes, self.expert_metric)
        if plan is not None:
            self._remember_plan(plan)
        return plan

    def _remember_plan(self, plan: tuple[int, ...] | list[int]) -> None:
        """Cache the plan for every state along it, so following the expert never searches twice."""
        plan = tuple(plan)
        room = self._room
        player, boxes = self._player, self._boxes
        self._plans[(boxes, player)] = (plan, 0)
        for index, d in enumerate(plan, start=1):
            delta = room.deltas[d]
            player += delta
            if boxes >> player & 1:
                boxes ^= (1 << player) | (1 << (player + delta))
            self._plans[(boxes, player)] = (plan, index)
