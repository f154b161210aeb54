"""The always-solvable room generator: carve a room, play backwards by pulling boxes, solve optimally.

Rooms are generated the way gym-sokoban does it (carve a room with a random-walk brush, put the boxes on their
targets, then play backwards by *pulling* boxes), so every room is solvable by construction; the generator
then solves the room with :func:`~hiergym.envs.sokoban.solver.solve` to record its optimal solution length.
"""

from __future__ import annotations

import numpy as np

from hiergym.envs.sokoban.board import (
    DIR_VECTORS,
    FLOOR,
    TARGET,
    WALL,
    Level,
    Room,
    bits,
    count_pushes,
    is_eval_layout,
    layout_fingerprint,
    manhattan,
    shift,
)
from hiergym.envs.sokoban.solver import SearchLimitExceeded, solve

#: Rooms whose optimal solution needs more A* expansions than this are redrawn by the generator. This bounds
#: generation time: with the push metric it never triggered on 200 12x12 rooms with 4 boxes; with the move
#: metric it redraws about one such room in ten.
GENERATION_EXPANSION_LIMIT = 5_000
#: Reverse plays tried per carved room; the generator keeps the best-scoring start (more: harder rooms).
REVERSE_PLAYS = 3

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
    dr, dc = DIR_VECTORS[new_dirs[0]]
    cells: set[tuple[int, int]] = set()
    for turn, new_dir, brush in zip(turns, new_dirs, brushes, strict=True):
        if turn:
            dr, dc = DIR_VECTORS[new_dir]
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
    mostly move a box away from its own target (so boxes travel). Of the states visited with every box off
    target, the one with the best score is returned, gym-sokoban's score: total box displacement from its own
    target times the number of switches between pulled boxes. The player then starts from a random cell of
    its region. ``None`` if no state qualified.
    """
    w = room.width
    deltas = room.deltas
    origin = list(bits(room.targets))
    position = list(origin)
    boxes = room.targets
    best: tuple[int, int] | None = None
    best_score = 0
    last_pulled, last_d, switches = -1, -1, 0
    uniforms = rng.random((num_pulls, 3))
    for step in range(num_pulls):
        free = room.floor & ~boxes
        region = room.region(player, boxes)
        # pulls[d]: cells p of the region with a box on p - delta and a free cell p + delta to step back to.
        pulls = [region & shift(boxes, delta) & shift(free, -delta) for delta in deltas]
        options = [(p, d) for d in range(4) for p in bits(pulls[d])]
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
            away = [(p, d) for p, d in options if manhattan(w, p, origin[position.index(p - deltas[d])])
                    > manhattan(w, p - deltas[d], origin[position.index(p - deltas[d])])]
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
    cells = list(bits(room.region(player, boxes)))
    return cells[int(rng.integers(len(cells)))], boxes, best_score


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
        tiles = np.where(floor_mask, FLOOR, WALL).reshape(-1)
        tiles[chosen[:num_boxes]] = TARGET
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
