"""Reliability fuzz benchmark: junk actions against every registered env and every PettingZoo game.

For each single-agent env of ``hiergym.env_ids()`` and each multi-agent game in both PettingZoo APIs (AEC and
Parallel), it sends ``--actions`` actions drawn from a junk corpus and counts exceptions and contract
violations (docs/environments.md). The corpus mixes:

- random printable text, random Unicode text, bytes (valid and invalid UTF-8), ints (huge ones included),
  floats, ``None``, bools, lists, dicts and tuples, and strings far over the 4,096-character limit;
- *contaminated commands*: a command the env would accept now (an admissible or expert action) with one of
  the 24 code points that ``str.split()`` / ``str.lower()`` used to let through (:data:`BAD_CODE_POINTS`)
  inserted somewhere. Each must be an invalid action that changes nothing;
- real moves (the expert's next action, or an admissible one) about a third of the time, so episodes end
  and the steps after the end are fuzzed too.

Contract violations counted (single-agent): an observation that is not a non-empty printable-ASCII string in
the observation space, a non-float reward, non-bool flags, ``info`` without the contract keys, a non-text
or contaminated action reported valid or changing ``state_key``, and after ``terminated`` / ``truncated``
(the env's own limit) any step that does not repeat the terminal observation with reward 0, the same flags
and ``action_valid=False``. Multi-agent: the same per-agent checks on ``infos``; after the game, AEC steps
(``None`` for a done agent, as PettingZoo requires, then anything once ``agents`` is empty) and Parallel
steps (which must return five empty dicts) must not change the game.

    python -m hiergym.benchmarks.reliability_envs --actions 2000
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import hiergym
from hiergym.envs.core import INFO_KEYS, MAX_ACTION_CHARS, TEXT_CHARSET
from hiergym.envs.multiagent import GAMES

#: The code points ``str.split()`` treats as whitespace beyond ASCII space/tab/CR/LF/VT/FF, and KELVIN SIGN
#: (``"\u212a".lower() == "k"``): before the shared normalisation rule they let a valid command through.
BAD_CODE_POINTS = (
    "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
    *(chr(c) for c in range(0x2000, 0x200B)),
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u212a",
)
_PRINTABLE = np.array(sorted(TEXT_CHARSET - {"\x0b", "\x0c"}))


@dataclass
class Tally:
    """What one target (an env or a game in one API) went through."""

    name: str
    api: str
    #: Junk actions sent (post-end steps included); real moves, which keep episodes going, are not counted.
    actions: int = 0
    real_moves: int = 0
    episodes_ended: int = 0
    post_end_steps: int = 0
    exceptions: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        self.violations += 1
        if len(self.examples) < 5:
            self.examples.append(f"violation: {text}")

    def exception(self, action: Any, error: BaseException) -> None:
        self.exceptions += 1
        if len(self.examples) < 5:
            where = traceback.extract_tb(error.__traceback__)[-1]
            self.examples.append(f"{type(error).__name__}: {error} (action {_short(action)}; "
                                 f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})")


def _short(action: Any) -> str:
    try:
        text = repr(action)
    except ValueError:  # an int with more digits than Python converts
        text = f"<int of {action.bit_length()} bits>"
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------------ junk
def contaminate(command: str, rng: np.random.Generator) -> str:
    """``command`` with one of :data:`BAD_CODE_POINTS` inserted (at an end, at a space, or anywhere)."""
    bad = BAD_CODE_POINTS[int(rng.integers(len(BAD_CODE_POINTS)))]
    where = int(rng.integers(4))
    if where == 0:
        return bad + command
    if where == 1:
        return command + bad
    if where == 2 and " " in command:
        return command.replace(" ", bad, 1)
    at = int(rng.integers(len(command) + 1))
    return command[:at] + bad + command[at:]


#: Kinds of junk that must be invalid actions that change nothing.
MUST_BE_INVALID = ("contaminated", "not_text", "too_long")


def junk_action(rng: np.random.Generator, commands: list[str]) -> tuple[Any, str]:
    """One junk action and its kind: one of :data:`MUST_BE_INVALID` (a contaminated command, a value that is
    not text, text over the length limit), or ``"junk"`` (anything may happen, but nothing may raise)."""
    kind = int(rng.integers(12))
    if kind <= 2 and commands:  # the most telling case: a command the env accepts now, contaminated
        command = commands[int(rng.integers(len(commands)))]
        contaminated = contaminate(command, rng)
        if kind == 2:
            return contaminated.encode("utf-8"), "contaminated"
        return (contaminated.upper() if rng.random() < 0.3 else contaminated), "contaminated"
    if kind == 3:
        return "".join(rng.choice(_PRINTABLE, size=int(rng.integers(0, 40)))), "junk"
    if kind == 4:
        points = rng.integers(0, 0x110000, size=int(rng.integers(1, 20)))
        return "".join(chr(int(p)) for p in points), "junk"
    if kind == 5:
        return "".join(BAD_CODE_POINTS[int(i)] for i in rng.integers(len(BAD_CODE_POINTS), size=3)), "contaminated"
    if kind == 6:
        size = int(rng.choice([MAX_ACTION_CHARS + 1, 100_000, 1_000_000]))
        base = commands[0] if commands and rng.random() < 0.5 else "x"
        return base + " " * (size - len(base)), "too_long"
    if kind == 7:
        return bytes(rng.integers(0, 256, size=int(rng.integers(0, 30)), dtype=np.uint8)), "junk"
    if kind == 8:
        return int(rng.choice([0, 1, -7, 5, 10**30, 10**5000])), "junk"
    if kind == 9:
        return [None, 3.5, float("nan"), True, np.float32(1)][int(rng.integers(5))], "not_text"
    if kind == 10:
        return [["up"], {"action": "look"}, ("look",), object(), np.array(["up"])][int(rng.integers(5))], "not_text"
    # ASCII whitespace is forgiven, the other ASCII control characters are not (here: vertical tab)
    return "\t ".join(["", *commands[:1], ""]) + "\x0b", "contaminated"


def check_single_info(info: Any, tally: Tally, where: str) -> bool:
    """The contract keys are there with the right types (else one violation)."""
    if not isinstance(info, dict) or any(key not in info for key in INFO_KEYS):
        tally.violation(f"{where}: info lacks contract keys")
        return False
    if not isinstance(info["action_valid"], bool) or not isinstance(info["won"], bool):
        tally.violation(f"{where}: action_valid/won not bool")
        return False
    return True


# ------------------------------------------------------------------------------------------ single agent
def fuzz_single(env_id: str, junk: int, seed: int) -> Tally:
    """Junk against one registered single-agent env (unwrapped: the post-end rule is about the env's own end;
    Gymnasium's ``TimeLimit`` sits outside it, so the registered step limit is applied here by resetting)."""
    tally = Tally(env_id, "gymnasium")
    env = gym.make(env_id).unwrapped
    limit = gym.spec(env_id).max_episode_steps or 100
    rng = np.random.default_rng(seed)
    episode = 0

    def reset() -> tuple[str, dict]:
        nonlocal episode
        episode += 1
        return env.reset(seed=seed * 100_003 + episode)

    _, info = reset()
    plan: list[str] | None = None  # the expert's line from the current state, while the episode follows it
    steps = 0
    final: tuple | None = None  # (observation, terminated, truncated, info) of the terminal step
    post_end_left = 0
    commands: list[str] = []
    while tally.actions < junk:
        if final is not None and post_end_left <= 0:
            _, info = reset()
            final, plan, steps = None, None, 0
        if final is None:
            if plan is None:
                plan = list(env.expert_plan() or [])
            commands = list(dict.fromkeys([*plan[:1], *(info.get("admissible_actions") or [])]))
        if final is None and commands and rng.random() < 0.35:
            action, kind = (plan[0] if plan and rng.random() < 0.8 else commands[int(rng.integers(len(commands)))],
                            "real")
            tally.real_moves += 1
        else:
            # after the end, also the plain commands the terminal state accepted (e.g. a push after the win)
            if final is not None and commands and rng.random() < 0.4:
                action, kind = commands[int(rng.integers(len(commands)))], "junk"
            else:
                action, kind = junk_action(rng, commands)
            tally.actions += 1
        key_before = info.get("state_key")
        try:
            obs2, reward, terminated, truncated, info2 = env.step(action)
        except Exception as error:  # noqa: BLE001 - counting them is the point
            tally.exception(action, error)
            _, info = reset()
            final, plan, steps = None, None, 0
            continue
        steps += 1
        where = f"step {steps} {_short(action)}"
        if not (isinstance(obs2, str) and obs2 and env.observation_space.contains(obs2)):
            tally.violation(f"{where}: observation not printable ASCII text")
        if not isinstance(reward, float) or not isinstance(terminated, bool) or not isinstance(truncated, bool):
            tally.violation(f"{where}: reward/flags of the wrong type")
        if not check_single_info(info2, tally, where):
            _, info = reset()
            final, plan, steps = None, None, 0
            continue
        if final is not None:
            tally.post_end_steps += 1
            post_end_left -= 1
            if (obs2, reward, terminated, truncated, info2["action_valid"]) != (final[0], 0.0, final[1], final[2], False):
                tally.violation(f"{where}: after the episode's end, not the terminal observation with reward 0, "
                                "the same flags and action_valid=False")
            if info2["state_key"] != final[3]["state_key"]:
                tally.violation(f"{where}: the state changed after the episode's end")
        else:
            if kind in MUST_BE_INVALID:
                if info2["action_valid"]:
                    tally.violation(f"{where}: a {kind} action was accepted")
                if info2["state_key"] != key_before:
                    tally.violation(f"{where}: a {kind} action changed the state")
            if plan and action == plan[0] and info2["action_valid"]:
                plan.pop(0)
            elif info2["action_valid"]:
                plan = None  # off the expert's line: ask again
            if terminated or truncated:
                tally.episodes_ended += 1
                final = (obs2, terminated, truncated, info2)
                post_end_left = int(rng.integers(1, 5))
            elif steps >= limit:  # Gymnasium's TimeLimit would end it here (not the env's own end)
                _, info2 = reset()
                plan, steps = None, 0
        info = info2
    env.close()
    return tally


# ------------------------------------------------------------------------------------------- multi-agent
def _game_module(game: str):
    return importlib.import_module(f"hiergym.envs.multiagent.{game}")


def fuzz_aec(game: str, junk: int, seed: int) -> Tally:
    """Junk against the AEC env (the raw env: PettingZoo's order-enforcing wrapper only adds warnings)."""
    tally = Tally(game, "aec")
    env = _game_module(game).raw_env()
    rng = np.random.default_rng(seed)
    episode = 0
    env.reset(seed=seed * 100_003)
    while tally.actions < junk:
        if not env.agents:
            key = env.game.state_key()
            for extra in (None, "look", 5):  # after everybody's last step: nothing happens
                tally.actions += 1
                tally.post_end_steps += 1
                try:
                    env.step(extra)
                except Exception as error:  # noqa: BLE001
                    tally.exception(extra, error)
                if env.agents or env.game.state_key() != key:
                    tally.violation("a step after the game changed it")
            episode += 1
            tally.episodes_ended += 1
            env.reset(seed=seed * 100_003 + episode)
            continue
        agent = env.agent_selection
        done = env.terminations[agent] or env.truncations[agent]
        commands = list(env.infos[agent].get("admissible_actions") or [])
        if done:
            action, kind = None, "dead"  # PettingZoo's rule: a done agent is stepped with None
            tally.actions += 1
            tally.post_end_steps += 1
        elif commands and rng.random() < 0.35:
            action, kind = commands[int(rng.integers(len(commands)))], "real"
            tally.real_moves += 1
        else:
            action, kind = junk_action(rng, commands)
            tally.actions += 1
        key = env.game.state_key()
        try:
            env.step(action)
        except Exception as error:  # noqa: BLE001
            tally.exception(action, error)
            episode += 1
            env.reset(seed=seed * 100_003 + episode)
            continue
        if kind == "dead":
            if agent in env.agents or env.game.state_key() != key:
                tally.violation("a done agent's None step did not just remove it")
            continue
        if check_single_info(env.infos.get(agent), tally, f"{game} aec"):
            if kind in MUST_BE_INVALID and env.infos[agent]["action_valid"]:
                tally.violation(f"{game} aec: a {kind} action {_short(action)} was accepted")
        obs = env.observe(agent)
        if not (isinstance(obs, str) and obs and env.observation_space(agent).contains(obs)):
            tally.violation(f"{game} aec: observation not printable ASCII text")
    return tally


def fuzz_parallel(game: str, junk: int, seed: int) -> Tally:
    tally = Tally(game, "parallel")
    env = _game_module(game).parallel_env()
    rng = np.random.default_rng(seed)
    episode = 0
    obs, infos = env.reset(seed=seed * 100_003)
    while tally.actions < junk:
        if not env.agents:
            key = env.game.state_key()
            for extra in ({}, {"player_0": "look", "player_1": None}, {"nobody": 1}):
                tally.actions += 1
                tally.post_end_steps += 1
                try:
                    result = env.step(extra)
                except Exception as error:  # noqa: BLE001
                    tally.exception(extra, error)
                    continue
                if tuple(result) != ({}, {}, {}, {}, {}) or env.game.state_key() != key:
                    tally.violation("a step after the game did not return five empty dicts and change nothing")
            episode += 1
            tally.episodes_ended += 1
            obs, infos = env.reset(seed=seed * 100_003 + episode)
            continue
        joint: dict[str, Any] = {}
        kinds: dict[str, str] = {}
        for agent in env.agents:
            commands = list(infos[agent].get("admissible_actions") or [])
            if commands and rng.random() < 0.35:
                joint[agent], kinds[agent] = commands[int(rng.integers(len(commands)))], "real"
                tally.real_moves += 1
            else:
                joint[agent], kinds[agent] = junk_action(rng, commands)
                tally.actions += 1
        if rng.random() < 0.1:
            joint["not_an_agent"] = "look"
        movers = [a for a in env.agents if infos[a].get("to_move")]
        live = env.agents[:]
        try:
            obs, rewards, terminations, truncations, infos = env.step(joint)
        except Exception as error:  # noqa: BLE001
            tally.exception(joint, error)
            episode += 1
            obs, infos = env.reset(seed=seed * 100_003 + episode)
            continue
        if any(set(part) != set(live) for part in (obs, rewards, terminations, truncations, infos)):
            tally.violation(f"{game} parallel: returns not keyed by the live agents")
        for agent in movers:
            if check_single_info(infos.get(agent), tally, f"{game} parallel"):
                if kinds[agent] in MUST_BE_INVALID and infos[agent]["action_valid"]:
                    tally.violation(f"{game} parallel: a {kinds[agent]} action {_short(joint[agent])} was accepted")
        for agent, text in obs.items():
            if not (isinstance(text, str) and text and env.observation_space(agent).contains(text)):
                tally.violation(f"{game} parallel: observation not printable ASCII text")
    return tally


# ------------------------------------------------------------------------------------------------ driver
def targets(envs: Iterable[str] | None = None) -> list[tuple[str, str, Callable[[int, int], Tally]]]:
    """(name, api, run(actions, seed)) for every registered env and every game in both APIs."""
    chosen = set(envs) if envs else None
    out: list[tuple[str, str, Callable[[int, int], Tally]]] = []
    for env_id in hiergym.env_ids():
        if chosen is None or env_id in chosen or env_id.split("/")[-1] in chosen:
            out.append((env_id, "gymnasium", lambda n, s, e=env_id: fuzz_single(e, n, s)))
    for game in GAMES:
        if chosen is None or game in chosen:
            out.append((game, "aec", lambda n, s, g=game: fuzz_aec(g, n, s)))
            out.append((game, "parallel", lambda n, s, g=game: fuzz_parallel(g, n, s)))
    return out


def format_table(tallies: list[Tally], seconds: list[float]) -> str:
    header = ("env", "api", "junk actions tried", "of them post-end", "real moves", "episodes ended",
              "exceptions", "contract violations", "s")
    rows = [(t.name, t.api, str(t.actions), str(t.post_end_steps), str(t.real_moves), str(t.episodes_ended),
             str(t.exceptions), str(t.violations), f"{s:.1f}") for t, s in zip(tallies, seconds, strict=True)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=2000,
                        help="junk actions per env and per game API (real moves that keep episodes going are extra)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", nargs="*", default=None,
                        help="env ids (or names such as Sokoban-v0) and game names; default: all")
    args = parser.parse_args(argv)
    if args.actions < 1:
        parser.error("--actions must be at least 1")
    tallies, seconds = [], []
    for name, api, run in targets(args.envs):
        start = time.perf_counter()
        tally = run(args.actions, args.seed)
        seconds.append(time.perf_counter() - start)
        tallies.append(tally)
        print(f"{name} ({api}): {tally.actions} actions, {tally.exceptions} exceptions, "
              f"{tally.violations} violations", file=sys.stderr, flush=True)
    print(format_table(tallies, seconds))
    for tally in tallies:
        for example in tally.examples:
            print(f"  {tally.name} ({tally.api}): {example}")
    return 1 if any(t.exceptions or t.violations for t in tallies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
