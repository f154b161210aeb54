"""The group vector env takes any junk as an action, as its envs do: flagged invalid, never an exception."""

from __future__ import annotations

import hiergym


def test_unprintable_actions_are_invalid_not_a_crash() -> None:
    env = hiergym.make_group_vec("hiergym/Sokoban-v0", num_tasks=1, group_size=4, seed=0)
    env.reset()
    out = env.step([10**5000, None, b"\xff\xfe", {"up": 1}])  # repr of a 5,000-digit int raises in Python 3.11
    assert out.invalid.all() and not out.error.any()
    assert out.actions[0] == "<unprintable int>"
    env.close()
