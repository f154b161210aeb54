"""The ray backend of the group vector env (envs/vector/ray_backend.py): the same outputs as the sync backend
for the same seeds on every registered env, asynchronous stepping, and a killed actor reported and replaced.

Runs on a local Ray instance with 2 CPUs, started once for the module; skipped without Ray
(``pip install 'hiergym[ray]'``)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import hiergym
from hiergym.envs.vector import make_group_vec

ray = pytest.importorskip("ray", reason="the ray backend needs Ray: pip install 'hiergym[ray]'")

#: Cheap actors: 4 of them fit the 2-CPU local instance.
OPTIONS = {"num_cpus": 0.25, "copies_per_actor": 2}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # address="local": a fresh instance even where an earlier cluster left /tmp/ray/ray_current_cluster behind.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def pick(info: dict, rng: np.random.Generator) -> str:
    actions = info.get("admissible_actions") or ["look"]
    return actions[int(rng.integers(len(actions)))]


def fields(out) -> tuple:
    return (list(out.observations), out.rewards.tolist(), out.terminated.tolist(), out.truncated.tolist(),
            out.active.tolist(), out.error.tolist(), out.group_id.tolist(), out.traj_id.tolist(),
            list(out.anchor), list(out.next_state_key), out.invalid.tolist(), out.won.tolist())


def play(env, steps: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    outs = [tuple(obs)]
    for _ in range(steps):
        if not env.running.any():
            break
        outs.append(fields(env.step([pick(info, rng) for info in env.infos])))
    return outs


@pytest.mark.parametrize("env_id", hiergym.env_ids())
def test_ray_backend_matches_sync(env_id: str) -> None:
    results = {}
    for backend in ("sync", "ray"):
        kwargs = {"ray_options": OPTIONS} if backend == "ray" else {}
        with make_group_vec(env_id, num_tasks=2, group_size=2, seed=3, backend=backend, **kwargs) as env:
            if backend == "ray":
                assert env.num_workers == 2 and len(set(env.worker_pids)) == 2
            results[backend] = play(env, 3, seed=1) + play(env, 2, seed=2)  # two batches
    assert results["sync"] == results["ray"]


def test_ray_async_stepping_and_remote_errors() -> None:
    with make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=0, backend="ray",
                        ray_options=OPTIONS) as env, \
            make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=0) as reference:
        env.reset()
        reference.reset()
        actions = [pick(info, np.random.default_rng(5)) for info in env.infos]
        seen: dict[int, tuple] = {}

        def keep(out) -> list[int]:
            for r, i in enumerate(out.indices.tolist()):
                if out.active[r]:
                    seen[i] = (out.observations[r], float(out.rewards[r]), out.actions[r])
            return out.indices.tolist()

        env.step_async(actions[:2], indices=[0, 1])  # copy i lives in actor i % 2: one copy on each
        rows, deadline = [], time.monotonic() + 30
        while len(rows) < 2 and time.monotonic() < deadline:
            rows += keep(env.poll(timeout=1.0))
        assert sorted(rows) == [0, 1]
        env.step_async(actions[2:], indices=[2, 3])
        assert keep(env.step_wait(indices=[2], timeout=30)) == [2]
        keep(env.step_wait(timeout=30))
        expected = reference.step(actions)
        assert seen == {i: (expected.observations[i], float(expected.rewards[i]), expected.actions[i])
                        for i in range(4)}
        # A mistake in reset options is raised here, with the actor's traceback as its cause.
        with pytest.raises(ValueError, match="unknown split") as caught:
            env.reset(options={"split": "test-set"})
        assert "select_task" in str(caught.value.__cause__)
        env.reset()
        assert env.running.all()


def test_ray_killed_actor_is_reported_and_restarted() -> None:
    env = make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=0, backend="ray",
                         ray_options=OPTIONS, step_timeout=30)
    env.reset()
    victim = env.worker_pids[1]  # actor 1 holds copies 1 and 3
    os.kill(victim, signal.SIGKILL)
    out = env.step(["up"] * 4)
    assert out.error.tolist() == [False, True, False, True]
    assert "died" in out.infos[1]["error"] and "restarted" in out.infos[3]["error"]
    assert env.worker_restarts == 1 and env.worker_pids[1] != victim
    assert env.running[[1, 3]].tolist() == [False, False]
    env.reset()
    out = env.step(["up"] * 4)
    assert not out.error.any() and out.active.all()
    # An actor that dies between steps is found by the next reset, which replaces it and retries.
    os.kill(env.worker_pids[0], signal.SIGKILL)
    obs, _ = env.reset()
    assert env.worker_restarts == 2 and env.running.all() and obs[0] == obs[1]
    env.close()


def test_ray_options_are_checked() -> None:
    from hiergym.envs.vector.ray_backend import RayOptions

    for bad, match in (({"num_cpus": 0}, "num_cpus"), ({"copies_per_actor": 0}, "copies_per_actor"),
                       ({"strategy": "PACKED"}, "strategy")):
        with pytest.raises(ValueError, match=match):
            RayOptions(**bad)


def test_trainer_rollouts_on_ray_actors_equal_sync(tmp_path) -> None:
    """``env_backend=ray`` in the trainer's config: the rollout batch (token ids, rewards, ids) is the one the
    in-process envs give."""
    import torch

    from hiergym.training.config import load_config
    from hiergym.training.rollout import collect_rollouts
    from hiergym.training.trainer import build_agent, build_policy, make_vec

    torch.set_num_threads(1)
    batches = {}
    for backend in ("sync", "ray"):
        config = load_config("sokoban", overrides={"env_backend": backend, "env_workers": 2, "num_tasks": 2,
                                                   "group_size": 2, "max_episode_steps": 3, "max_new_tokens": 6,
                                                   "device": "cpu", "out_dir": str(tmp_path / backend)})
        vec = make_vec(config, config.num_tasks, config.group_size, config.train_split)
        assert vec.backend == backend
        rollout = collect_rollouts(vec, build_agent(config, build_policy(config), config.temperature))
        vec.close()
        batches[backend] = [(r.group_id, r.traj_id, r.step, r.prompt_token_ids, r.response_token_ids, r.reward,
                             r.done) for r in rollout.records]
    assert batches["sync"] == batches["ray"] and len(batches["sync"]) >= 4
