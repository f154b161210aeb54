"""Optimal Sokoban solvers: push-optimal and move-optimal A* over bitboard states.

Both searches expand a state by the same pushes (:func:`_pushes`): every box the player can stand behind and
push onto a free live cell without freezing a 2x2 block, with the consistent lower bound of the pushes left
(:meth:`Room.heuristic`). They differ in what a state is and what an edge costs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from hiergym.envs.sokoban.board import UNMATCHABLE, Room, bits, manhattan, shift

METRICS = ("pushes", "moves")


class SearchLimitExceeded(RuntimeError):
    """The solver expanded more states than it was allowed to."""


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


def _pushes(
    room: Room, boxes: int, stands: int, delta: int, pushes_left: dict[int, int]
) -> Iterator[tuple[int, int, int, int]]:
    """The pushes by ``delta`` from each cell of ``stands`` (where the player stands, behind a box whose next
    cell is free and live), less those that freeze a 2x2 block or leave no matching of boxes to targets.

    Yields ``(stand cell, box cell = where the player ends, new box bitset, heuristic of the new boxes)``.
    ``pushes_left`` memoises the heuristic per box bitset.
    """
    frozen_at = room.frozen_at
    while stands:
        low = stands & -stands
        stands ^= low
        cell = low.bit_length() - 1
        box = cell + delta
        new_box = box + delta
        new_boxes = boxes ^ (1 << box) | (1 << new_box)
        if frozen_at(new_box, new_boxes):
            continue
        h = pushes_left.get(new_boxes)
        if h is None:
            h = pushes_left[new_boxes] = room.heuristic(new_boxes)
        if h >= UNMATCHABLE:
            continue
        yield cell, box, new_boxes, h


def _solve_pushes(room: Room, player: int, boxes: int, max_expansions: int | None) -> list[int] | None:
    """Push-optimal A*: states are (boxes, player's region, named by its lowest cell), edges single pushes.

    The heuristic (cheapest matching of boxes to distinct targets by push distance) is consistent, so the
    first goal popped has the fewest pushes. Among equal push counts, the state reached with fewer moves
    is kept, which keeps the walks short.
    """
    goal = room.targets
    start_player = player
    h0 = room.heuristic(boxes)
    if h0 >= UNMATCHABLE:
        return None
    deltas = room.deltas
    free_live = room.floor & room.live
    region_of = room.region
    push, pop = heapq.heappush, heapq.heappop
    pushes_left: dict[int, int] = {}
    region = region_of(player, boxes)
    start = (boxes, region & -region)
    best: dict[tuple[int, int], tuple[int, int]] = {start: (0, 0)}  # key -> (pushes, moves)
    parent: dict[tuple[int, int], tuple[tuple[int, int], int, int]] = {}
    heap: list[tuple[int, int, int, int, int]] = [(h0, 0, 0, boxes, player)]
    expansions = 0
    while heap:
        _, neg_pushes, moves, boxes, player = pop(heap)
        pushes = -neg_pushes
        region = region_of(player, boxes)
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
            stands = shift(boxes & shift(target_free, -delta), -delta) & region
            for cell, box, new_boxes, h in _pushes(room, boxes, stands, delta, pushes_left):
                new_region = region_of(box, new_boxes)
                new_key = (new_boxes, new_region & -new_region)
                # Moves so far, approximately: a walk of at least the Manhattan distance, plus the push.
                new_moves = moves + manhattan(room.width, player, cell) + 1
                if (pushes + 1, new_moves) >= best.get(new_key, (UNMATCHABLE, 0)):
                    continue
                best[new_key] = (pushes + 1, new_moves)
                parent[new_key] = (key, cell, d)
                push(heap, (pushes + 1 + h, -(pushes + 1), new_moves, new_boxes, box))
    return None


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
    if h0 >= UNMATCHABLE:
        return None
    h0 += _walk_bound(room, player, boxes)
    deltas = room.deltas
    floor, width = room.floor, room.width
    free_live = floor & room.live
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
        stand = [shift(boxes & shift(target_free, -delta), -delta) & free for delta in deltas]
        wanted = stand[0] | stand[1] | stand[2] | stand[3]
        # Breadth-first layers of the player's walk, stopped once every push position is reached.
        seen = frontier = 1 << player
        steps = 0
        while frontier and wanted:
            hits = frontier & wanted
            if hits:
                wanted &= ~hits
                for d in range(4):
                    for cell, box, new_boxes, h in _pushes(room, boxes, hits & stand[d], deltas[d], pushes_left):
                        state = (new_boxes, box)
                        new_cost = cost + steps + 1
                        if new_cost >= best_cost.get(state, UNMATCHABLE):
                            continue
                        new_box = box + deltas[d]
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
        (abs(b // w - r) + abs(b % w - c) - 1 for b in bits(boxes & ~room.targets)),
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
