"""Gymnasium's own vector envs on every registered id: ``gymnasium.make_vec`` in ``sync`` and ``async`` mode.

Gymnasium batches infos key by key (a dict recursively, numbers into typed arrays, anything else into object
arrays), so every info key must keep one type across steps and copies; and ``AsyncVectorEnv`` passes
observations through shared memory by default, which hiergym's registration makes work for ``Text`` spaces.
"""

from __future__ import annotations

import copy
import pickle
import random
from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import hiergym
from hiergym.registration import SharedTextBatch

ENV_IDS = hiergym.env_ids()
SEED = 11


def _action(info: dict[str, Any], step: int, copy_index: int) -> str:
    """A deterministic admissible action (WebShop's search placeholder filled in)."""
    actions = info["admissible_actions"] or ["look"]
    return actions[(3 * step + copy_index) % len(actions)].replace("<query>", "shirt")


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_matches_single_envs(env_id: str, mode: str) -> None:
    num_envs, steps = 2, 5
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    singles = [gym.make(env_id) for _ in range(num_envs)]
    try:
        obs, infos = vec.reset(seed=SEED)  # Gymnasium seeds copy i with SEED + i
        pairs = [env.reset(seed=SEED + i) for i, env in enumerate(singles)]
        assert isinstance(obs, tuple) and obs == tuple(o for o, _ in pairs)
        assert list(infos["state_key"]) == [info["state_key"] for _, info in pairs]
        single_infos = [info for _, info in pairs]
        for step in range(steps):
            actions = [_action(info, step, i) for i, info in enumerate(single_infos)]
            obs, rewards, terminated, truncated, infos = vec.step(actions)
            results = [env.step(a) for env, a in zip(singles, actions, strict=True)]
            assert obs == tuple(r[0] for r in results), f"step {step}"
            assert all(isinstance(o, str) for o in obs)
            np.testing.assert_array_equal(rewards, [r[1] for r in results])
            np.testing.assert_array_equal(terminated, [r[2] for r in results])
            np.testing.assert_array_equal(truncated, [r[3] for r in results])
            single_infos = [r[4] for r in results]
            assert list(infos["state_key"]) == [info["state_key"] for info in single_infos]
            assert list(infos["won"]) == [info["won"] for info in single_infos]
            if terminated.any() or truncated.any():
                break  # the next step would autoreset that copy
    finally:
        vec.close()
        for env in singles:
            env.close()


def test_negotiation_infos_batch_across_four_copies() -> None:
    """The reported failure: ``info["offer"]`` was None in some copies and a dict in others."""
    vec = gym.make_vec("hiergym/Negotiation-v0", num_envs=4, vectorization_mode="sync")
    _, infos = vec.reset(seed=0)
    for step in range(6):
        actions = [_action({"admissible_actions": list(infos["admissible_actions"][i])}, step, i) for i in range(4)]
        _, _, terminated, truncated, infos = vec.step(actions)
        assert isinstance(infos["offer"], dict) and infos["offer_by"].dtype == object
    vec.close()


def _types(info: dict[str, Any], prefix: str, seen: dict[str, set[str]]) -> None:
    for key, value in info.items():
        seen[prefix + key].add(type(value).__name__)
        if isinstance(value, dict):
            _types(value, f"{prefix}{key}.", seen)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_info_key_keeps_one_type(env_id: str) -> None:
    """Across seeds and steps (admissible, expert and invalid actions, to the episode's end)."""
    env = gym.make(env_id)
    rnd = random.Random(0)
    seen: dict[str, set[str]] = defaultdict(set)
    for seed in range(4):
        _, info = env.reset(seed=seed)
        _types(info, "", seen)
        follow_expert = seed % 2 == 0
        for step in range(30):
            plan = env.unwrapped.expert_plan() if follow_expert else None
            if plan:
                action = plan[0]
            elif rnd.random() < 0.15:
                action = "xyzzy junk"
            else:
                action = _action(info, step + rnd.randrange(7), seed)
            _, _, terminated, truncated, info = env.step(action)
            _types(info, "", seen)
            if terminated or truncated:
                break
    mixed = {key: types for key, types in seen.items() if len(types) > 1}
    assert not mixed, f"{env_id}: info keys with more than one type: {mixed}"
    env.close()


def test_shared_text_batch_is_a_live_view() -> None:
    space = gym.spaces.Text(max_length=8, charset="abc ")
    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    buffer = create_shared_memory(space, n=2)
    view = read_from_shared_memory(space, buffer, n=2)
    assert isinstance(view, SharedTextBatch) and len(view) == 2
    write_to_shared_memory(space, 0, "ab c", buffer)
    write_to_shared_memory(space, 1, "", buffer)
    assert view == ("ab c", "") and view[0] == "ab c" and view[1:] == ("",) and list(view) == ["ab c", ""]
    snapshot = copy.deepcopy(view)
    assert type(snapshot) is tuple and snapshot == ("ab c", "")
    assert pickle.loads(pickle.dumps(view)) == ("ab c", "") and copy.copy(view) == ("ab c", "")
    write_to_shared_memory(space, 1, "cab", buffer)
    assert view[1] == "cab" and snapshot[1] == ""  # the view follows the buffer, the copy does not


def test_async_without_shared_memory_gives_the_same() -> None:
    kwargs = {"num_envs": 2, "vectorization_mode": "async"}
    shared = gym.make_vec("hiergym/Sokoban-v0", **kwargs)
    pickled = gym.make_vec("hiergym/Sokoban-v0", vector_kwargs={"shared_memory": False}, **kwargs)
    try:
        assert shared.reset(seed=3)[0] == pickled.reset(seed=3)[0]
        assert shared.step(["up", "left"])[0] == pickled.step(["up", "left"])[0]
    finally:
        shared.close()
        pickled.close()
