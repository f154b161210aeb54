"""Views of a Sokoban state: the text grid in hiergym's symbols and an RGB image of 16-pixel tiles.

Symbols: ``#`` wall, ``_`` floor, ``O`` target, ``X`` box, ``V`` box on target, ``P`` player, ``S`` player on
target. The sprites are drawn with numpy (no image files).
"""

from __future__ import annotations

import numpy as np

from hiergym.envs.sokoban.board import Room, bits

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


def board_text(room: Room, player: int, boxes: int) -> str:
    """The grid, one row per line, in hiergym's symbols."""
    chars = list(room._base_chars)
    for cell in bits(boxes):
        chars[cell] = "V" if chars[cell] == "O" else "X"
    chars[player] = "S" if chars[player] == "O" else "P"
    w = room.width
    return "\n".join("".join(chars[r * w : (r + 1) * w]) for r in range(room.height))


def board_rgb(room: Room, player: int, boxes: int) -> np.ndarray:
    """The board as an ``(H*16, W*16, 3)`` uint8 image."""
    grid = board_text(room, player, boxes).split("\n")
    codes = np.array([[_CHAR_CODES[ch] for ch in row] for row in grid], dtype=np.intp)
    tiles = _SPRITES[codes]  # (H, W, t, t, 3)
    h, w, t = room.height, room.width, TILE_PIXELS
    return tiles.transpose(0, 2, 1, 3, 4).reshape(h * t, w * t, 3)
