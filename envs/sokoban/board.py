"""The bitboard room: static walls and targets, what the solvers precompute from them, and small bit helpers.

Cells are flat indices ``r * width + c``; sets of cells are Python ints used as bitsets, so the player's
reachable region is a handful of shifts and masks. The room's border is always wall, so a shift never wraps
from one row into a reachable cell of the next.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: Directions in gym-sokoban's order (its actions 1-4 push and 5-8 move in this order).
DIRECTIONS = ("up", "down", "left", "right")
#: ``(row, column)`` steps of :data:`DIRECTIONS`.
DIR_VECTORS = ((-1, 0), (1, 0), (0, -1), (0, 1))

#: Which split a room belongs to: train rooms have ``fingerprint % SPLIT_MODULUS != 0``.
SPLIT_MODULUS = 8
#: Heuristic value meaning "no matching of boxes to targets exists".
UNMATCHABLE = 1 << 40

# Tile codes of a room's layout array.
WALL, FLOOR, TARGET = 0, 1, 2


def bits(mask: int) -> Iterator[int]:
    """Indices of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def shift(mask: int, delta: int) -> int:
    return mask << delta if delta >= 0 else mask >> -delta


def manhattan(width: int, a: int, b: int) -> int:
    return abs(a // width - b // width) + abs(a % width - b % width)


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


def layout_fingerprint(height: int, width: int, floor: int, targets: int) -> int:
    """A 64-bit hash of a room layout (floor and target bitsets), stable across processes."""
    key = f"{height}x{width}:{floor:x}:{targets:x}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def is_eval_layout(fingerprint: int) -> bool:
    """Layouts reserved for the evaluation splits (one in :data:`SPLIT_MODULUS`); train never uses them."""
    return fingerprint % SPLIT_MODULUS == 0


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
        self.floor = sum(1 << int(i) for i in np.flatnonzero(flat != WALL))
        self.targets = sum(1 << int(i) for i in np.flatnonzero(flat == TARGET))
        self.walls = ((1 << self.size) - 1) & ~self.floor
        self.num_targets = self.targets.bit_count()
        self.deltas = (-self.width, self.width, -1, 1)
        #: Per target, the push distance of every cell to it; and to the nearest target, with that target.
        self.distance_to = [self._push_distances(1 << t) for t in bits(self.targets)]
        self.push_distance = [-1] * self.size
        self.nearest_target = [-1] * self.size
        for t, dist in enumerate(self.distance_to):
            for cell, d in enumerate(dist):
                if d >= 0 and (self.push_distance[cell] < 0 or d < self.push_distance[cell]):
                    self.push_distance[cell], self.nearest_target[cell] = d, t
        #: Per cell, its push distance to each target (unreachable: UNMATCHABLE); filled on demand.
        self._cost_rows: dict[int, tuple[int, ...]] = {}
        self.matchings = _permutations(self.num_targets) if self.num_targets <= 6 else ()
        #: Cells from which a box can still reach some target ("live"); every other floor cell is dead.
        self.live = sum(1 << c for c, dist in enumerate(self.push_distance) if dist >= 0)
        self.squares_of = _squares(self.height, self.width)
        #: A hash of the layout (size, walls, targets): names the room in state keys and picks its split.
        self.fingerprint = layout_fingerprint(self.height, self.width, self.floor, self.targets)
        self.id = f"{self.fingerprint & 0xFFFFFFFF:08x}"
        base = np.where(flat == WALL, "#", np.where(flat == TARGET, "O", "_"))
        self._base_chars = base.tolist()

    def is_floor(self, cell: int) -> bool:
        return bool(self.floor >> cell & 1)

    def _push_distances(self, sources: int) -> list[int]:
        """Fewest pushes moving a box from each cell onto the nearest cell of ``sources`` (-1: never).

        A breadth-first search of *pulls* from the sources, in the room without other boxes: a box on ``c``
        can be pushed onto ``c - d`` when ``c`` and ``c + d`` are floor (the player stands on ``c + d``).
        """
        dist = [-1] * self.size
        queue = deque(bits(sources))
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
        return any(self.frozen_at(b, boxes) for b in bits(boxes & ~self.targets))

    # ----------------------------------------------------------------------------------- player moves
    def region(self, player: int, boxes: int) -> int:
        """The cells the player can walk to from ``player`` around ``boxes`` (a bitset)."""
        free = self.floor & ~boxes
        w = self.width
        seen = frontier = 1 << player
        while frontier:
            frontier = ((frontier << 1) | (frontier >> 1) | (frontier << w) | (frontier >> w)) & free & ~seen
            seen |= frontier
        return seen

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
        row = tuple(dist[cell] if dist[cell] >= 0 else UNMATCHABLE for dist in self.distance_to)
        self._cost_rows[cell] = row
        return row

    def heuristic(self, boxes: int) -> int:
        """Lower bound on the pushes left: a cheapest matching of boxes to distinct targets by push distance.

        Admissible and consistent (one push changes one box's distances by at most one). Returns a value of
        at least :data:`UNMATCHABLE` when no matching exists (some box can reach no free target): a deadlock.
        """
        cells = list(bits(boxes))
        nearest = self.nearest_target
        if len({nearest[c] for c in cells}) == len(cells) and -1 not in (nearest[c] for c in cells):
            return sum(self.push_distance[c] for c in cells)  # nearest targets are distinct: optimal matching
        if len(cells) != self.num_targets or len(cells) > 6:  # n! matchings: fall back to the sum of minima
            return sum(self.push_distance[c] if self.push_distance[c] >= 0 else UNMATCHABLE for c in cells)
        rows = [self._cost_rows.get(c) or self._cost_row(c) for c in cells]
        return min(sum(row[t] for row, t in zip(rows, perm, strict=True)) for perm in self.matchings)


@dataclass(frozen=True)
class Level:
    """A room with its initial state and, when known, an optimal plan (list of directions)."""

    room: Room
    player: int
    boxes: int
    plan: tuple[int, ...] | None


def count_pushes(room: Room, player: int, boxes: int, plan: Sequence[int]) -> int:
    """How many of the plan's moves push a box."""
    pushes = 0
    for d in plan:
        player += room.deltas[d]
        if boxes >> player & 1:
            boxes ^= (1 << player) | (1 << (player + room.deltas[d]))
            pushes += 1
    return pushes
