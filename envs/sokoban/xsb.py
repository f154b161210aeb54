"""Hand-built boards: hiergym's symbols or the standard XSB ones, parsed into a :class:`Level`.

Symbols: ``#`` wall, ``_`` floor, ``O`` target, ``X`` box, ``V`` box on target, ``P`` player, ``S`` player on
target; XSB: ``#`` wall, space/``-`` floor, ``.`` target, ``$`` box, ``*`` box on target, ``@`` player, ``+``
player on target. Lines are padded to a rectangle, a missing border of walls is added, and floor the player
can never reach (outside the room) becomes wall.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hiergym.envs.sokoban.board import DIR_VECTORS, FLOOR, TARGET, WALL, Level, Room

#: Board symbols: ours first (what observations use), then the standard XSB ones accepted by the parser.
SYMBOLS: dict[str, tuple[int, bool, bool]] = {  # char -> (tile, has box, has player)
    "#": (WALL, False, False),
    "_": (FLOOR, False, False),
    "O": (TARGET, False, False),
    "X": (FLOOR, True, False),
    "V": (TARGET, True, False),
    "P": (FLOOR, False, True),
    "S": (TARGET, False, True),
    " ": (FLOOR, False, False),
    "-": (FLOOR, False, False),
    ".": (TARGET, False, False),
    "$": (FLOOR, True, False),
    "*": (TARGET, True, False),
    "@": (FLOOR, False, True),
    "+": (TARGET, False, True),
}


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
    tiles = np.full((height, width), WALL, dtype=np.int8)
    boxes_rc, players = [], []
    for r, line in enumerate(lines, start=1):
        for c, ch in enumerate(line, start=1):
            if ch not in SYMBOLS:
                raise ValueError(
                    f"unknown board symbol {ch!r} at line {r}, column {c}; use # _ O X V P S (or XSB # - . $ * @ +)"
                )
            tile, box, player = SYMBOLS[ch]
            tiles[r, c] = tile
            if box:
                boxes_rc.append((r, c))
            if player:
                players.append((r, c))
    if len(players) != 1:
        raise ValueError(f"the board needs exactly one player (P, S, @ or +), found {len(players)}")
    num_targets = int((tiles == TARGET).sum())
    if not boxes_rc or len(boxes_rc) != num_targets:
        raise ValueError(f"the board needs as many boxes as targets, at least one; found {len(boxes_rc)} boxes "
                         f"and {num_targets} targets")
    # Floor outside the room (not connected to the player even through boxes) becomes wall.
    reach = np.zeros_like(tiles, dtype=bool)
    queue = deque([players[0]])
    reach[players[0]] = True
    while queue:
        r, c = queue.popleft()
        for dr, dc in DIR_VECTORS:
            nr, nc = r + dr, c + dc
            if tiles[nr, nc] != WALL and not reach[nr, nc]:
                reach[nr, nc] = True
                queue.append((nr, nc))
    if any(not reach[rc] for rc in boxes_rc) or int((reach & (tiles == TARGET)).sum()) != num_targets:
        raise ValueError("every box and target must be inside the player's room")
    tiles[~reach] = WALL
    # Drop the padding ring again where the board already had its own border of walls.
    rows = np.flatnonzero(reach.any(axis=1))
    cols = np.flatnonzero(reach.any(axis=0))
    tiles = tiles[rows[0] - 1 : rows[-1] + 2, cols[0] - 1 : cols[-1] + 2]
    offset_r, offset_c = int(rows[0]) - 1, int(cols[0]) - 1
    room = Room(tiles)

    def flat(rc: tuple[int, int]) -> int:
        return (rc[0] - offset_r) * room.width + rc[1] - offset_c

    return Level(room, flat(players[0]), sum(1 << flat(rc) for rc in boxes_rc), None)
