"""Speed of ``hiergym/ALFWorld-v0``: the native engine against the real ALFWorld engine, on the same tasks.

In one process, for the same generated tasks (the six task types in turn) and the same command sequences (a
random admissible walk, then the expert's plan to the goal):

- ``native``: ``env.reset(seed=...)`` time (task generation + engine set-up + info) and ``env.step`` rate of
  the gym env on the native engine (best of ``--native-rounds``);
- ``alfworld``: the same through ``engine="alfworld"`` (TextWorld's PDDL engine with ALFWorld's wrappers):
  reset = loading the exported ``.tw-pddl`` game (Fast Downward translates it) + TextWorld's reset; steps;
- the ratios, and whether both engines produced identical observations and admissible commands.

    python -m hiergym.benchmarks.alfworld_speed                 # 12 tasks, 30-step walks
    python -m hiergym.benchmarks.alfworld_speed --tasks 24 --walk 40

Needs the ``hiergym[alfworld]`` extra for the real engine (without it only the native figures print).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from hiergym.envs.alfworld.env import AlfWorldEnv
from hiergym.envs.alfworld.world import TASK_TYPES


def trajectories(num_tasks: int, walk: int) -> list[tuple[int, str, list[str]]]:
    """(seed, task type, commands) per task: a random admissible walk, then the expert's plan."""
    env = AlfWorldEnv()
    result = []
    for seed in range(num_tasks):
        task_type = TASK_TYPES[seed % len(TASK_TYPES)]
        _, info = env.reset(seed=seed, options={"task_type": task_type})
        rng = random.Random(seed)
        commands: list[str] = []
        for _ in range(walk):
            command = rng.choice(info["admissible_actions"])
            _, _, terminated, _, info = env.step(command)
            commands.append(command)
            if terminated:
                break
        if not info["won"]:
            commands += env.expert_plan()
        result.append((seed, task_type, commands))
    return result


def run(env: AlfWorldEnv, tasks: list[tuple[int, str, list[str]]], reset_repeats: int):
    """Seconds per reset, steps per second, and the observed (observation, admissible) sequences."""
    reset_time, resets = 0.0, 0
    for _ in range(reset_repeats):
        for seed, task_type, _ in tasks:
            start = time.perf_counter()
            env.reset(seed=seed, options={"task_type": task_type})
            reset_time += time.perf_counter() - start
            resets += 1
    step_time, steps, transcript = 0.0, 0, []
    for seed, task_type, commands in tasks:
        obs, info = env.reset(seed=seed, options={"task_type": task_type})
        transcript.append((obs, tuple(info["admissible_actions"])))
        for command in commands:
            start = time.perf_counter()
            obs, _, _, _, info = env.step(command)
            step_time += time.perf_counter() - start
            steps += 1
            transcript.append((obs, tuple(info["admissible_actions"]), info["won"]))
    return reset_time / resets, steps / step_time, steps, transcript


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12, help="generated tasks (task types in turn)")
    parser.add_argument("--walk", type=int, default=30, help="random admissible commands before the expert plan")
    parser.add_argument("--native-reset-repeats", type=int, default=200)
    parser.add_argument("--native-rounds", type=int, default=3, help="native timings: best of this many rounds")
    args = parser.parse_args(argv)

    tasks = trajectories(args.tasks, args.walk)
    # Best of a few rounds: the native figures are short enough for other processes' noise to matter.
    rounds = [run(AlfWorldEnv(), tasks, args.native_reset_repeats) for _ in range(args.native_rounds)]
    native_reset = min(r[0] for r in rounds)
    native_rate = max(r[1] for r in rounds)
    _, _, steps, native_transcript = rounds[0]
    print(f"ALFWorld-v0 speed on {len(tasks)} generated tasks, {steps} steps (random walk + expert plan)")
    print(f"  native   : reset {native_reset * 1e3:8.3f} ms   step {native_rate:10,.0f} steps/s")
    try:
        real_env = AlfWorldEnv(engine="alfworld", game_source="generated", cache_dir=tempfile.mkdtemp())
    except ImportError as exc:
        print(f"  alfworld : not measured ({exc})")
        return
    for seed, task_type, _ in tasks:  # export every game once, outside the timings
        real_env.reset(seed=seed, options={"task_type": task_type})
    real_reset, real_rate, _, real_transcript = run(real_env, tasks, 1)
    print(f"  alfworld : reset {real_reset * 1e3:8.3f} ms   step {real_rate:10,.1f} steps/s   "
          "(TextWorld PDDL engine + ALFWorld wrappers; reset = load game + reset)")
    print(f"  ratio    : reset {real_reset / native_reset:8,.0f}x faster   step {native_rate / real_rate:10,.0f}x faster")
    same = native_transcript == real_transcript
    print(f"  identical observations, admissible commands and won on every step: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
