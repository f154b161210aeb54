"""One rank of the data-parallel tests (tests/training/test_distributed.py), launched by torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node N distributed_worker.py MODE CONFIG_JSON OUT

MODE:
- ``update``: behaviour cloning, then one RL iteration per estimator, on the rollout batch that a world of
  one recorded (``OUT.rollout``) and each rank's share of it; rank 0 saves the parameters to ``OUT``.
- ``run``: a whole ``Trainer.run``; every rank plays the *whole* batch with the rank-independent agent and
  keeps its share (so the rollouts are the same for every world size); rank 0 writes the evaluations to OUT.
- ``stop``: as ``run``, but every rank exits cleanly when iteration 2 starts (a killed run, checkpointed).
- ``resume``: as ``run`` with ``resume=True``.
- ``crash`` / ``kill`` / ``hang``: rank 1 raises / SIGKILLs itself / sleeps in its first iteration.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time

import gymnasium as gym
import torch

torch.set_num_threads(1)

from hiergym.envs.core import (  # noqa: E402
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.training import trainer as trainer_module  # noqa: E402
from hiergym.training.config import load_config  # noqa: E402
from hiergym.training.trainer import Trainer, build_agent, make_vec  # noqa: E402


class TargetEnv(gym.Env):
    """One step: the observation names the right letter ("answer a" or "answer b", drawn from the task seed);
    answering it wins. The expert answers right. Even a policy that always answers the same letter wins some
    tasks and loses others, so evaluations have both to compare."""

    def __init__(self, render_mode: str | None = None):
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self._target, self._state = "a", "start"

    def _info(self, valid: bool = True) -> dict:
        return make_info(task="answer", admissible_actions=["a", "b"], won=self._state == self._target,
                         action_valid=valid, state_key=f"{self._target}:{self._state}")

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        _, _, rng = select_task("target", self.np_random, options)
        self._target, self._state = "ab"[int(rng.integers(2))], "start"
        return f"answer {self._target}", self._info()

    def step(self, action):
        choice = normalize_action(action)
        if choice not in ("a", "b"):
            return "Nothing happens.", 0.0, False, False, self._info(valid=False)
        self._state = choice
        return f"you answered {choice}", float(choice == self._target), True, False, self._info()

    def expert_plan(self):
        return [self._target] if self._state == "start" else []


TARGET_ID = "hiergym_test/Target-v0"
if TARGET_ID not in gym.registry:
    gym.register(TARGET_ID, entry_point=TargetEnv, max_episode_steps=3)


def full_state(value):
    """A state dict with FSDP's DTensors gathered into plain tensors (every rank must call it)."""
    if not isinstance(value, dict):
        return value
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in value.items()}


def rank_share(rollout, dist, num_tasks: int):
    """The records and episodes of this rank's group slots (slot = group id - the batch's first group id)."""
    from hiergym.training.rollout import RolloutResult

    first_group = min(r.group_id for r in rollout.records)
    lo, hi = dist.bounds(num_tasks)
    keep = lambda group_id: lo <= group_id - first_group < hi  # noqa: E731
    return RolloutResult(records=[r for r in rollout.records if keep(r.group_id)],
                         episodes=[e for e in rollout.episodes if keep(e["group_id"])])


def same_rollouts_for_every_world_size(config) -> None:
    """Replace the trainer's rollout: the whole batch, by the agent of seed ``config.seed``, then this rank's
    share (a rank's own agent samples differently from one process's, so only this makes runs comparable)."""
    original = trainer_module.collect_rollouts
    holder = {}

    def collect(vec, agent, **kwargs):
        trainer = holder["trainer"]
        if "full" not in holder:
            holder["full"] = make_vec(config, config.num_tasks, config.group_size, config.train_split)
        full = holder["full"]
        full.batch_index = vec.batch_index
        rollout = original(full, build_agent(config, trainer.policy, config.temperature), **kwargs)
        return rank_share(rollout, trainer.dist, config.num_tasks)

    trainer_module.collect_rollouts = collect
    return holder


def main() -> None:
    mode, config_json, out = sys.argv[1], sys.argv[2], sys.argv[3]
    overrides = json.loads(config_json)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if mode == "update":
        params = {}
        bc = Trainer(load_config(None, None, {**overrides, "out_dir": overrides["out_dir"] + "-bc"}))
        params["init"] = {k: v.detach().clone() for k, v in bc.policy.model.state_dict().items()}
        bc.behaviour_clone()
        params["bc"] = {k: v.detach().clone() for k, v in bc.policy.model.state_dict().items()}
        for estimator in (("gigpo",) if overrides.get("fsdp") else ("gigpo", "gae")):
            config = load_config(None, None, {**overrides, "estimator": estimator,
                                              "out_dir": overrides["out_dir"] + f"-{estimator}"})
            trainer = Trainer(config)
            path = out + ".rollout"
            if world == 1:
                rollout = trainer_module.collect_rollouts(
                    trainer.train_vec, build_agent(config, trainer.policy, config.temperature))
                with open(path, "wb") as fh:
                    pickle.dump(rollout, fh)
            else:
                with open(path, "rb") as fh:
                    rollout = rank_share(pickle.load(fh), trainer.dist, config.num_tasks)
            trainer_module.collect_rollouts = lambda vec, agent, _r=rollout, **kw: _r
            metrics = trainer.train_iteration(0)
            params[estimator] = {k: v.detach().clone() for k, v in trainer.policy.model.state_dict().items()}
            if trainer.value_head is not None:
                params[estimator].update({f"value_head.{k}": v.detach().clone()
                                          for k, v in trainer.value_head.state_dict().items()})
            params[f"{estimator}_metrics"] = metrics
        if bc.dist.is_main or overrides.get("fsdp"):
            params = {k: full_state(v) for k, v in params.items()}
        if bc.dist.is_main:
            torch.save(params, out)
        return
    config = load_config(None, None, overrides)
    holder = same_rollouts_for_every_world_size(config)
    if mode in ("stop", "crash", "kill", "hang"):
        original = Trainer.train_iteration

        def train_iteration(self, iteration):
            if mode == "stop" and iteration == 1:
                # every rank: the run "dies" after its first checkpointed iteration. os._exit, not sys.exit: at
                # interpreter teardown a process group's C++ threads could abort the process (seen under load).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            if mode == "crash" and self.dist.rank == 1:
                raise RuntimeError("rank 1 exploded on purpose")
            if mode == "kill" and self.dist.rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang" and self.dist.rank == 1:
                time.sleep(600)
            return original(self, iteration)

        Trainer.train_iteration = train_iteration
    trainer = Trainer(config, resume=mode == "resume")
    holder["trainer"] = trainer
    summary = trainer.run()
    if trainer.dist.is_main:
        results = {}
        for label in sorted(os.listdir(os.path.join(config.out_dir, "eval"))):
            with open(os.path.join(config.out_dir, "eval", label, "results.jsonl")) as fh:
                rows = [json.loads(line) for line in fh]
            results[label] = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]
        with open(out, "w") as fh:
            json.dump({"evaluations": summary["evaluations"], "results": results,
                       "iterations": summary["iterations"], "world_size": world}, fh)


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    record(main)()  # as `hiergym train` does: the failing rank's traceback in torchrun's report
