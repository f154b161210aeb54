"""Sokoban as a multi-turn text environment, with a fast always-solvable generator and an optimal solver.

``hiergym/Sokoban-v0`` is :class:`SokobanEnv` (:mod:`.env`; its docstring is the full description). The
pieces: :mod:`.board` (the bitboard :class:`Room`, :class:`Level`, layout fingerprints and splits),
:mod:`.solver` (push- and move-optimal A*), :mod:`.generator` (carving, reverse play, :func:`generate_level`),
:mod:`.xsb` (:func:`parse_board` for hand-built boards) and :mod:`.render` (text grid and RGB sprites).
See ``docs/sokoban.md``.
"""

from hiergym.envs.sokoban.board import (
    DIRECTIONS,
    SPLIT_MODULUS,
    Level,
    Room,
    count_pushes,
    is_eval_layout,
    layout_fingerprint,
)
from hiergym.envs.sokoban.env import (
    BOX_OFF_TARGET_REWARD,
    BOX_ON_TARGET_REWARD,
    ENV_NAME,
    LEGEND,
    SOLVED_REWARD,
    STEP_PENALTY,
    TASK,
    SokobanEnv,
)
from hiergym.envs.sokoban.generator import (
    GENERATION_EXPANSION_LIMIT,
    REVERSE_PLAYS,
    carve_room,
    generate_level,
    reverse_play,
)
from hiergym.envs.sokoban.render import TILE_PIXELS, board_rgb, board_text
from hiergym.envs.sokoban.solver import METRICS, SearchLimitExceeded, solve
from hiergym.envs.sokoban.xsb import parse_board

__all__ = [
    "BOX_OFF_TARGET_REWARD",
    "BOX_ON_TARGET_REWARD",
    "DIRECTIONS",
    "ENV_NAME",
    "GENERATION_EXPANSION_LIMIT",
    "LEGEND",
    "METRICS",
    "REVERSE_PLAYS",
    "SOLVED_REWARD",
    "SPLIT_MODULUS",
    "STEP_PENALTY",
    "TASK",
    "TILE_PIXELS",
    "Level",
    "Room",
    "SearchLimitExceeded",
    "SokobanEnv",
    "board_rgb",
    "board_text",
    "carve_room",
    "count_pushes",
    "generate_level",
    "is_eval_layout",
    "layout_fingerprint",
    "parse_board",
    "reverse_play",
    "solve",
]
