"""Group vector environments (hiergym.envs.vector): B tasks x G same-seed copies, both backends."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

import hiergym
from hiergym.envs.core import (
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.envs.vector import GroupVecEnv, StepOutput, make_group_vec

COUNTER_ID = "hiergym-test/Counter-v0"


class CounterEnv(gym.Env):
    """Count up to a target drawn from the seed: a small deterministic env for the vector tests.

    Observation: "count C of T". Actions: "inc", "dec" (admissible); "crash" raises; "hang" sleeps 30 s;
    "unpicklable" puts a lambda in info; anything else is invalid ("Nothing happens."). Reward 1 and termination when C == T; -0.1 per invalid
    action. The time limit (registered) truncates.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self.render_mode = render_mode
        self.count, self.target = 0, 1

    def _info(self, valid: bool) -> dict:
        return make_info(task=f"reach {self.target}", admissible_actions=["inc", "dec"], won=self.count == self.target,
                         action_valid=valid, state_key=f"{self.count}/{self.target}")

    def _obs(self) -> str:
        return f"count {self.count} of {self.target}"

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        _, _, task_rng = select_task("Counter", self.np_random, options)
        self.target = int(task_rng.integers(2, 6))
        self.count = int(task_rng.integers(0, 2))
        return self._obs(), self._info(True)

    def step(self, action):
        text = normalize_action(action)
        if text == "crash":
            raise RuntimeError("counter exploded")
        if text == "hang":
            time.sleep(30)
        if text == "unpicklable":  # an info value a worker cannot send back
            return self._obs(), 0.0, False, False, {**self._info(True), "callback": lambda: None}
        if text in ("inc", "dec"):
            self.count += 1 if text == "inc" else -1
            won = self.count == self.target
            return self._obs(), float(won), won, False, self._info(True)
        return "Nothing happens.", -0.1, False, False, self._info(False)

    def render(self) -> str:
        return self._obs()


if COUNTER_ID not in gym.registry:
    gym.register(COUNTER_ID, entry_point=CounterEnv, max_episode_steps=6, disable_env_checker=True)

HAS_FORK = "fork" in mp.get_all_start_methods()
needs_fork = pytest.mark.skipif(not HAS_FORK, reason="the test env is registered in this file: workers need fork")


def make_counter(backend: str = "sync", **kwargs) -> GroupVecEnv:
    if backend == "process":
        kwargs.setdefault("num_workers", 2)
        kwargs.setdefault("context", "fork")
    return make_group_vec(COUNTER_ID, backend=backend, **kwargs)


def random_actions(env: GroupVecEnv, rng: np.random.Generator) -> list[str]:
    choices = ["inc", "inc", "dec", "jump"]
    return [choices[rng.integers(len(choices))] for _ in range(env.num_envs)]


def pick_admissible(info: dict, rng: np.random.Generator) -> str:
    choices = info.get("admissible_actions") or ["look"]
    return choices[int(rng.integers(len(choices)))]


def play(env: GroupVecEnv, steps: int, action_seed: int = 0) -> list[StepOutput]:
    rng = np.random.default_rng(action_seed)
    return [env.step(random_actions(env, rng)) for _ in range(steps)]


def output_fields(out: StepOutput) -> tuple:
    return (out.indices.tolist(), out.observations, out.rewards.tolist(), out.terminated.tolist(),
            out.truncated.tolist(), out.active.tolist(), out.group_id.tolist(), out.traj_id.tolist(),
            out.step.tolist(), out.anchor.tolist(), out.next_state_key.tolist(), out.invalid.tolist(),
            out.autoreset.tolist(), out.actions, [sorted(i) for i in out.infos])


# ------------------------------------------------------------------------------------------ sync backend
def test_group_copies_identical_at_reset_and_tasks_differ() -> None:
    with make_counter(num_tasks=6, group_size=3, seed=5) as env:
        obs, infos = env.reset()
        assert len(obs) == len(infos) == 18
        for slot in range(6):
            members = range(slot * 3, slot * 3 + 3)
            assert len({obs[i] for i in members}) == 1
            assert len({infos[i]["state_key"] for i in members}) == 1
            assert len({env.task_seeds[i] for i in members}) == 1
        assert len(set(env.task_seeds)) == 6, "each slot gets its own task seed"
        assert env.group_ids.tolist() == [g for g in range(6) for _ in range(3)]
        assert env.traj_ids.tolist() == list(range(18))
        assert env.running.all() and not env.pending.any()
        # The next batch draws new tasks; the counter moved; the ids keep counting.
        first_seeds = list(env.task_seeds)
        env.reset()
        assert env.batch_index == 2 and set(env.task_seeds).isdisjoint(first_seeds)
        assert env.group_ids.min() == 6 and env.traj_ids.min() == 18


def test_same_seed_same_batches_and_reset_seed_restarts() -> None:
    a, b = make_counter(num_tasks=4, group_size=2, seed=11), make_counter(num_tasks=4, group_size=2, seed=11)
    batches_a = [a.reset()[0] for _ in range(3)]
    batches_b = [b.reset()[0] for _ in range(3)]
    assert batches_a == batches_b
    assert a.reset(seed=11)[0] == batches_a[0], "reset(seed=...) restarts the task sequence"
    other = make_counter(num_tasks=4, group_size=2, seed=12)
    assert [other.reset()[0] for _ in range(3)] != batches_a
    for env in (a, b, other):
        env.close()


def test_step_outputs_map_onto_step_records_and_masking() -> None:
    env = make_counter(num_tasks=3, group_size=2, seed=0)
    env.reset()
    prompts = list(env.observations)
    keys = list(env.state_keys)
    # Copy 0 plays "inc" until it wins; the others make invalid moves so they keep running.
    finished_at = None
    for t in range(6):
        actions = ["inc"] + ["jump"] * 5
        out = env.step(actions)
        obs, rewards, terminated, truncated, infos = out  # unpacks like Gymnasium
        assert len(obs) == 6 and rewards.shape == (6,) and terminated.dtype == bool
        if t == 0:
            assert out.anchor.tolist() == keys and out.prev_observations == prompts
            assert out.step.tolist() == [0] * 6 and out.active.all()
            assert out.invalid.tolist() == [False] + [True] * 5
            assert rewards[1:].tolist() == [-0.1] * 5
            assert out.next_state_key.tolist() == [i["state_key"] for i in infos]
        if finished_at is None and terminated[0]:
            finished_at = t
            assert rewards[0] == 1.0 and out.won[0] and out.active[0]
            final_obs = obs[0]
        elif finished_at is not None:
            # Masked: not active, reward 0, last observation, still terminated, action ignored.
            assert not out.active[0] and rewards[0] == 0.0 and obs[0] == final_obs and terminated[0]
            assert out.step[0] == finished_at + 1 and not env.running[0]
        if not env.running.any():
            break
    assert finished_at is not None
    assert out.truncated[1:].all(), "the time limit (6 steps) truncates the invalid-move copies"
    records = out.to_records()  # the last step: the five truncated copies; copy 0 was masked
    assert [r.traj_id for r in records] == [1, 2, 3, 4, 5]
    assert all(r.done and r.invalid and r.step == 5 and r.action == "jump" for r in records)
    env.close()


def test_to_records_build_a_step_batch() -> None:
    from hiergym.training.trajectory import StepBatch

    env = make_counter(num_tasks=2, group_size=3, seed=3)
    env.reset()
    records, previous, rng = [], None, np.random.default_rng(1)
    while env.running.any():
        out = env.step(random_actions(env, rng))
        records += out.to_records()
        if previous is not None:
            # The anchor of a step is the state before its action: where the copy's previous step left it.
            stepped = out.active
            assert out.anchor[stepped].tolist() == previous.next_state_key[stepped].tolist()
        previous = out
    batch = StepBatch.from_records(records)
    assert len(batch) == len(records) > 0
    assert set(batch.group_id.tolist()) == {0, 1} and set(batch.traj_id.tolist()) == set(range(6))
    for traj in range(6):
        rows = batch.traj_id == traj
        assert batch.step[rows].tolist() == list(range(rows.sum()))
        assert batch.done[rows].tolist() == [False] * (rows.sum() - 1) + [True]
    env.close()


def test_fixed_eval_tasks_by_task_id() -> None:
    env = make_counter(num_tasks=3, group_size=2, seed=0, split="eval_in")
    first, _ = env.reset(task_ids=[0, 1, 2])
    assert env.batch_index == 0, "fixed-task resets do not advance the training task stream"
    again, _ = make_counter(num_tasks=3, group_size=2, seed=99, split="eval_in").reset(task_ids=[0, 1, 2])
    assert first == again, "task ids address the same tasks whatever the seed"
    single = gym.make(COUNTER_ID)
    assert single.reset(options={"split": "eval_in", "task_id": 2})[0] == first[4]
    with pytest.raises(ValueError, match="one per group slot"):
        env.reset(task_ids=[0, 1])
    with pytest.raises(ValueError, match="split"):
        env.reset(options={"split": "test-set"})
    env.close()


def test_env_that_raises_fails_its_copy_only() -> None:
    env = make_counter(num_tasks=2, group_size=2, seed=0)
    env.reset()
    out = env.step(["crash", "inc", "inc", "inc"])
    assert out.error.tolist() == [True, False, False, False]
    assert out.terminated[0] and out.active[0] and out.rewards[0] == 0.0
    assert "counter exploded" in out.infos[0]["error"] and "RuntimeError" in out.infos[0]["traceback"]
    assert not env.running[0] and env.running[1:].any()
    obs, _ = env.reset()  # a fresh env replaces the broken one
    assert env.running.all() and obs[0] == obs[1]
    env.close()


def test_autoreset_resets_finished_groups_same_step() -> None:
    env = make_counter(num_tasks=2, group_size=2, seed=4, autoreset=True)
    env.reset()
    old_traj = env.traj_ids.copy()
    old_seed_slot0 = env.task_seeds[0]
    # Copy 0 wins its task quickly while copy 1 (same group) makes invalid moves: copy 0 waits, masked.
    for _ in range(6):
        out = env.step(["inc", "jump", "jump", "jump"])
        if out.terminated[0]:
            break
    assert out.won[0] and not out.autoreset[0]
    out = env.step(["inc", "jump", "jump", "jump"])
    assert not out.active[0] and not env.running[0] and env.running[1]
    # Finish copy 1 by the time limit: the whole group resets in the same call (SAME_STEP).
    while not out.autoreset[1]:
        out = env.step(["inc", "jump", "jump", "jump"])
    assert out.truncated[1] and out.active[1] and out.autoreset[[0, 1]].all()
    assert out.infos[1]["final_obs"] == "Nothing happens." and out.infos[1]["final_info"]["action_valid"] is False
    assert out.observations[0] == out.observations[1] == env.observations[0]
    assert out.traj_id[1] == old_traj[1], "the row describes the finished trajectory's last step"
    assert env.running[[0, 1]].all() and env.step_indices[[0, 1]].tolist() == [0, 0]
    assert env.traj_ids[0] not in old_traj and env.task_seeds[0] != old_seed_slot0
    assert env.task_seeds[0] == env.task_seeds[1] and env.group_ids[0] == env.group_ids[1]
    # Group 1 (copies 2, 3) was truncated too in the same steps.
    assert out.autoreset[[2, 3]].all()
    env.close()


def test_autoreset_is_deterministic_and_off_for_fixed_tasks() -> None:
    runs = []
    for _ in range(2):
        env = make_counter(num_tasks=2, group_size=2, seed=8, autoreset=True)
        env.reset()
        runs.append([output_fields(o) for o in play(env, 15, action_seed=3)])
        env.close()
    assert runs[0] == runs[1]
    env = make_counter(num_tasks=2, group_size=2, seed=8, autoreset=True)
    env.reset(task_ids=[0, 1])
    outs = play(env, 8)
    assert not any(o.autoreset.any() for o in outs) and not env.running.any()
    env.close()


def test_async_stepping_in_process() -> None:
    env = make_counter(num_tasks=2, group_size=2, seed=1)
    env.reset()
    env.step_async(["inc", "dec"], indices=[3, 0])
    assert env.pending.tolist() == [True, False, False, True]
    with pytest.raises(RuntimeError, match="in flight"):
        env.step_async(["inc"], indices=[0])
    out = env.poll()
    assert sorted(out.indices.tolist()) == [0, 3] and out.active.all()
    assert out.actions == ["dec", "inc"]
    assert not env.pending.any() and env.step_indices.tolist() == [1, 0, 0, 1]
    assert len(env.poll()) == 0, "nothing in flight: an empty output"
    env.step_async(["inc"], indices=[1])
    with pytest.raises(RuntimeError, match="in flight"):
        env.step(["inc"] * 4)  # lock-step and async do not mix while steps are in flight
    env.call("render")  # receives copy 1's finished step on the way
    with pytest.raises(RuntimeError, match="not collected"):
        env.step_async(["inc"], indices=[1])
    out = env.step_wait()
    assert out.active.tolist() == [False, True, False, False] and env.step_indices.tolist() == [1, 1, 0, 1]
    env.close()


def test_streaming_poll_loop_with_autoreset() -> None:
    """The streaming pattern of docs/vector.md: resubmit whatever poll() returned running, forever."""
    env = make_counter(num_tasks=3, group_size=2, seed=2, autoreset=True)
    env.reset()
    rng = np.random.default_rng(0)
    env.step_async(random_actions(env, rng))
    finished: dict[int, int] = {}  # traj_id -> number of steps recorded
    for _ in range(60):
        out = env.poll(timeout=None)
        for record in out.to_records():
            assert record.step == finished.get(record.traj_id, 0), "steps of a trajectory arrive in order"
            finished[record.traj_id] = record.step + 1
        ready = [int(i) for i in out.indices if env.running[i] and not env.pending[i]]
        env.step_async([random_actions(env, rng)[0] for _ in ready], indices=ready)
    groups_started = int(env.group_ids.max()) + 1
    assert groups_started > 3, "finished groups were reset to new tasks"
    assert env.pending.sum() == env.running.sum(), "every running copy has a step in flight: nothing stalls"
    env.close()


@pytest.mark.parametrize("backend", ["sync", pytest.param("process", marks=needs_fork)])
def test_call_reaches_every_copy(backend: str) -> None:
    with make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=3, backend=backend,
                        **({"num_workers": 2, "context": "fork"} if backend == "process" else {})) as env:
        env.reset()
        plans = env.call("expert_plan")
        assert len(plans) == 4 and plans[0] == plans[1] and plans[2] == plans[3] and all(plans)
        assert env.call("render", indices=[2]) == [env.render()[2]]
        out = env.step([plans[i][0] for i in range(4)])
        assert out.active.all() and not out.invalid.any()
        with pytest.raises(AttributeError):
            env.call("no_such_method")
        assert env.step([plans[i][1] for i in range(4)]).active.all(), "a failed call leaves the envs alone"


def test_errors_name_the_fix() -> None:
    with pytest.raises(hiergym.registration.UnknownEnvironmentError, match="did you mean"):
        make_group_vec("hiergym/Sokobann-v0")
    with pytest.raises(ValueError, match="backend"):
        make_counter(backend="threads")
    with pytest.raises(ValueError, match="group_size"):
        make_counter(group_size=0)
    env = make_counter(num_tasks=1, group_size=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(["inc", "inc"])
    env.reset()
    with pytest.raises(ValueError, match="2 copies"):
        env.step(["inc"])
    env.close()


def test_lazy_public_entry_point() -> None:
    assert hiergym.make_group_vec is make_group_vec


# --------------------------------------------------------------------------------------- process backend
@needs_fork
def test_process_backend_matches_sync() -> None:
    results = {}
    for backend in ("sync", "process"):
        with make_counter(backend, num_tasks=4, group_size=3, seed=21, autoreset=True) as env:
            first = env.reset()
            outs = play(env, 10, action_seed=2)
            env.reset()
            second = play(env, 3, action_seed=5)
            results[backend] = (first, [output_fields(o) for o in outs + second])
    assert results["sync"] == results["process"]


@needs_fork
def test_chunked_step_async_equals_step() -> None:
    """docs/vector.md's micro-batched pattern (submit chunks, then step_wait) gives what step() gives."""
    outputs = {}
    for backend in ("sync", "process"):
        with make_counter(backend, num_tasks=3, group_size=2, seed=6, autoreset=True) as env:
            env.reset()
            rng, outs = np.random.default_rng(4), []
            for _ in range(8):
                actions = random_actions(env, rng)
                if backend == "sync":
                    outs.append(env.step(actions))
                    continue
                for chunk in np.array_split(np.flatnonzero(env.running), 3):
                    env.step_async([actions[i] for i in chunk], indices=chunk)
                outs.append(env.step_wait())
            outputs[backend] = [output_fields(o) for o in outs]
    assert outputs["sync"] == outputs["process"]


@needs_fork
def test_process_worker_killed_is_reported_and_restarted() -> None:
    env = make_counter("process", num_tasks=2, group_size=2, seed=0, step_timeout=20)
    env.reset()
    victim = env.worker_pids[1]  # holds copies 1 and 3 (copy i lives in worker i % 2)
    os.kill(victim, signal.SIGKILL)
    out = env.step(["inc"] * 4)
    assert out.error.tolist() == [False, True, False, True]
    assert out.terminated[[1, 3]].all() and "died" in out.infos[1]["error"] and "restarted" in out.infos[3]["error"]
    assert env.worker_restarts == 1 and env.worker_pids[1] != victim
    assert env.running.tolist() == [True, False, True, False]
    env.reset()
    out = env.step(["inc"] * 4)
    assert not out.error.any() and out.active.all()
    # A worker that dies between steps is found by the next reset, which restarts it and retries.
    os.kill(env.worker_pids[0], signal.SIGKILL)
    obs, _ = env.reset()
    assert env.worker_restarts == 2 and env.running.all() and obs[0] == obs[1]
    env.close()


@needs_fork
def test_process_env_raise_and_hung_worker_fail_cleanly() -> None:
    env = make_counter("process", num_tasks=2, group_size=2, seed=0, step_timeout=1.0)
    env.reset()
    out = env.step(["crash", "inc", "inc", "inc"])
    assert out.error.tolist() == [True, False, False, False] and "counter exploded" in out.infos[0]["error"]
    assert env.worker_restarts == 0, "an env that raises does not take its worker down"
    env.reset()
    out = env.step(["inc", "unpicklable", "inc", "inc"])
    assert out.error.tolist() == [False, True, False, False], "only the copy whose result cannot be sent fails"
    assert "could not be sent back" in out.infos[1]["error"] and env.worker_restarts == 0
    env.reset()
    start = time.monotonic()
    env.step_async(["hang"], indices=[1])
    out = env.step_wait()
    assert time.monotonic() - start < 10, "a hung worker must not hang the batch"
    assert out.error.tolist() == [False, True, False, False] and out.active.tolist() == [False, True, False, False]
    assert "did not answer within 1 s per copy" in out.infos[1]["error"] and env.worker_restarts == 1
    # Copy 3 lived in the killed worker too: its env is gone, so its next step fails at once.
    out = env.step(["inc"] * 4)
    assert out.active.tolist() == [True, False, True, True] and "lost its environment" in out.infos[3]["error"]
    assert out.error.tolist() == [False, True, False, True], "copy 1's masked row repeats how it ended"
    env.reset()
    assert not env.step(["inc"] * 4).error.any()
    # A mistake in reset options is raised here, as the sync backend does, with the worker's traceback.
    with pytest.raises(ValueError, match="unknown split") as caught:
        env.reset(options={"split": "test-set"})
    assert "select_task" in str(caught.value.__cause__)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(["inc"] * 4)
    env.reset()
    assert env.running.all()
    env.close()


@needs_fork
def test_process_async_overlap() -> None:
    env = make_counter("process", num_tasks=2, group_size=2, seed=0)
    env.reset()
    env.step_async(["inc", "inc"], indices=[0, 1])  # one copy on each worker
    rows = []
    deadline = time.monotonic() + 10
    while len(rows) < 2 and time.monotonic() < deadline:
        out = env.poll(timeout=1.0)
        rows += out.indices.tolist()
    assert sorted(rows) == [0, 1]
    env.step_async(["dec", "dec"], indices=[2, 3])
    out = env.step_wait(indices=[2], timeout=10)
    assert out.indices.tolist() == [2] and out.actions == ["dec"]
    out = env.step_wait(timeout=10)
    assert len(out) == 4 and out.active.tolist() == [False, False, False, True]
    env.close()


# ------------------------------------------------------------------------------------ registered envs
@pytest.mark.parametrize("env_id", hiergym.env_ids())
def test_every_registered_env_runs_as_groups(env_id: str) -> None:
    """Copies of a group start identical and, given the same actions, stay identical; groups differ."""
    rng = np.random.default_rng(0)
    with make_group_vec(env_id, num_tasks=2, group_size=2, seed=0) as env:
        obs, infos = env.reset()
        assert obs[0] == obs[1] and obs[2] == obs[3]
        assert infos[0]["state_key"] == infos[1]["state_key"] and infos[2]["state_key"] == infos[3]["state_key"]
        for _ in range(3):
            if not env.running.any():
                break
            first, second = (pick_admissible(env.infos[2 * slot], rng) for slot in (0, 1))
            actions = [first, first, second, second]
            out = env.step(actions)
            for slot in (0, 1):
                a, b = 2 * slot, 2 * slot + 1
                assert out.observations[a] == out.observations[b] and out.rewards[a] == out.rewards[b]
                assert out.next_state_key[a] == out.next_state_key[b]


@needs_fork
def test_sokoban_process_backend_matches_sync() -> None:
    results = {}
    for backend in ("sync", "process"):
        kwargs = {"num_workers": 2, "context": "fork"} if backend == "process" else {}
        with make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=3, seed=7, backend=backend,
                            **kwargs) as env:
            rng = np.random.default_rng(1)
            env.reset()
            outs = []
            for _ in range(4):
                outs.append(env.step([pick_admissible(info, rng) for info in env.infos]))
            results[backend] = [output_fields(o) for o in outs]
    assert results["sync"] == results["process"]


def test_shards_with_first_slot_play_the_tasks_of_one_env() -> None:
    """Data-parallel ranks: envs of B/N slots with first_slot = r*B/N draw, batch after batch, exactly the
    tasks of one env of B slots (docs/scaling.md)."""
    with make_group_vec("hiergym/Sokoban-v0", num_tasks=4, group_size=2, seed=5) as whole, \
            make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=5) as first, \
            make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=5, first_slot=2) as second:
        for _ in range(2):
            obs, _ = whole.reset()
            assert obs == first.reset()[0] + second.reset()[0]
            assert whole.task_seeds == first.task_seeds + second.task_seeds
    with pytest.raises(ValueError, match="first_slot"):
        make_group_vec("hiergym/Sokoban-v0", first_slot=-1)
