"""One normalisation of action text (``normalize_action``), fuzzed over every env and every PettingZoo game.

The rule (docs/environments.md, "Actions"): only printable ASCII plus space/tab/CR/LF; any other character,
checked on the raw text before anything is stripped or case-folded, makes the action invalid. Before it, 24
code points (what ``str.split()`` treats as whitespace beyond ASCII, and KELVIN SIGN, which ``.lower()``
turns into ``k``) let a valid command through as if it were plain.
"""

from __future__ import annotations

import importlib
import string

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hiergym
from hiergym.envs.core import MAX_ACTION_CHARS, normalize_action
from hiergym.envs.multiagent import GAMES

BAD_CODE_POINTS = (
    "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
    *(chr(c) for c in range(0x2000, 0x200B)),
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u212a",
)
ENV_IDS = hiergym.env_ids()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
#: Anything an agent might send: text of any alphabet, text near the rule's edges, bytes, numbers, containers.
junk = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from([*BAD_CODE_POINTS, *string.printable, "\x00", "\x7f"]), max_size=30),
    st.binary(max_size=30),
    st.integers(min_value=-(10**6000), max_value=10**6000),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.just("x" * (MAX_ACTION_CHARS + 1)),
)


def contaminated(command: str, bad: str, where: int, upper: bool) -> str:
    text = command.upper() if upper else command
    at = where % (len(text) + 1)
    return text[:at] + bad + text[at:]


# ------------------------------------------------------------------------------------------------ the rule
def test_there_are_24_code_points_and_each_makes_a_command_invalid() -> None:
    assert len(set(BAD_CODE_POINTS)) == 24
    for bad in BAD_CODE_POINTS:
        assert bad.split() == [] or bad.lower() == "k"  # what made them dangerous
        for text in (f"{bad}up", f"up{bad}", f"push{bad}up", bad, f" {bad} "):
            assert normalize_action(text) is None, repr(text)
            assert normalize_action(text.encode("utf-8")) is None, repr(text)
    assert normalize_action("\u212aick") is None


def test_ascii_whitespace_and_case_are_forgiven() -> None:
    assert normalize_action("  Push \t UP\r\n") == "push up"
    assert normalize_action(b" LOOK ") == "look"
    assert normalize_action(np.str_("Go  To Desk 1")) == "go to desk 1"
    assert normalize_action(3) == "3" and normalize_action(np.int64(7)) == "7"
    assert normalize_action("x" * MAX_ACTION_CHARS) == "x" * MAX_ACTION_CHARS


@pytest.mark.parametrize("action", [
    "", " \t\r\n ", "\x0bup", "up\x0c", "\x00", "up\x7f", "caf\xe9", "\u00e9", "\ufeffup", "\u200bup",
    "x" * (MAX_ACTION_CHARS + 1), b"\xff", b"\xc2\xa0up", None, True, 3.0, ["up"], ("up",), {"up": 1},
    pytest.param(10**5000, id="int-of-5001-digits"), np.float64(1.0), bytearray(b"\x1cup"),
])
def test_anything_else_is_none(action) -> None:
    assert normalize_action(action) is None


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_normalised_text_is_plain_and_stable(text: str) -> None:
    result = normalize_action(text)
    allowed = set(string.printable) - {"\x0b", "\x0c"}
    if any(ch not in allowed for ch in text) or not text.strip(" \t\r\n"):
        assert result is None
    else:
        assert result == " ".join(text.split()).lower()
    if result is not None:
        assert result.isascii() and result.isprintable() and result == result.strip() and "  " not in result
        assert result == result.lower() and normalize_action(result) == result


# --------------------------------------------------------------------------------------- single-agent envs
@pytest.fixture(scope="module")
def envs() -> dict[str, gym.Env]:
    made = {env_id: gym.make(env_id, max_episode_steps=10_000) for env_id in ENV_IDS}
    yield made
    for env in made.values():
        env.close()


def valid_commands(env: gym.Env, info: dict) -> list[str]:
    plan = env.unwrapped.expert_plan() or []
    return list(dict.fromkeys([*plan[:1], *(info["admissible_actions"] or [])[:10]]))


@pytest.mark.parametrize("env_id", ENV_IDS)
@FUZZ
@given(pick=st.integers(0, 10), bad=st.sampled_from(BAD_CODE_POINTS), where=st.integers(0, 200),
       upper=st.booleans(), as_bytes=st.booleans())
def test_a_command_with_any_bad_code_point_is_invalid(envs, env_id, pick, bad, where, upper, as_bytes) -> None:
    env = envs[env_id]
    _, info = env.reset(seed=0)
    commands = valid_commands(env, info)
    command = commands[pick % len(commands)]
    action = contaminated(command, bad, where, upper)
    obs, reward, terminated, truncated, after = env.step(action.encode("utf-8") if as_bytes else action)
    assert after["action_valid"] is False, f"{action!r} accepted"
    assert after["state_key"] == info["state_key"], f"{action!r} changed the state"
    env.reset(seed=0)
    assert env.step(command.upper() if upper else command)[4]["action_valid"], f"{command!r} itself is valid"


@pytest.mark.parametrize("env_id", ENV_IDS)
@FUZZ
@given(prefix=st.integers(0, 40), actions=st.lists(junk, min_size=1, max_size=6))
def test_junk_never_raises_and_the_end_holds(envs, env_id, prefix, actions) -> None:
    """Follow the expert for ``prefix`` steps (often to the end), then send junk."""
    env = envs[env_id]
    _, info = env.reset(seed=1)
    final = None
    for action in (env.unwrapped.expert_plan() or [])[:prefix]:
        result = env.step(action)
        if result[2] or result[3]:
            final = result
            break
    for action in actions:
        result = env.step(action)
        obs, reward, terminated, truncated, info = result
        assert isinstance(obs, str) and obs and env.observation_space.contains(obs)
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        if final is not None:
            assert (obs, reward, terminated, truncated) == (final[0], 0.0, final[2], final[3])
            assert info["action_valid"] is False and info["state_key"] == final[4]["state_key"]
        elif terminated or truncated:
            final = result
        if normalize_action(action) is None:
            assert info["action_valid"] is False


# ------------------------------------------------------------------------------------------ PettingZoo games
def game_module(game: str):
    return importlib.import_module(f"hiergym.envs.multiagent.{game}")


@pytest.mark.parametrize("game", GAMES)
@FUZZ
@given(moves=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(BAD_CODE_POINTS), st.integers(0, 200),
                                st.booleans()), min_size=1, max_size=8))
def test_games_refuse_bad_code_points_in_both_apis(game, moves) -> None:
    m = game_module(game)
    aec = m.raw_env()
    aec.reset(seed=2)
    par = m.parallel_env()
    _, infos = par.reset(seed=2)
    for pick, bad, where, upper in moves:
        if aec.agents:
            agent = aec.agent_selection
            if aec.terminations[agent] or aec.truncations[agent]:
                aec.step(None)
            else:
                legal = aec.infos[agent]["admissible_actions"]
                action = contaminated(legal[pick % len(legal)], bad, where, upper)
                aec.step(action)
                assert aec.infos[agent]["action_valid"] is False, f"AEC accepted {action!r}"
        if par.agents:
            movers = [a for a in par.agents if infos[a]["to_move"]]
            actions = {a: contaminated(infos[a]["admissible_actions"][pick % len(infos[a]["admissible_actions"])],
                                       bad, where, upper) for a in movers}
            _, _, _, _, infos = par.step(actions)
            for agent in movers:
                assert infos[agent]["action_valid"] is False, f"Parallel accepted {actions[agent]!r}"


@pytest.mark.parametrize("game", GAMES)
@FUZZ
@given(actions=st.lists(junk, min_size=1, max_size=30))
def test_games_never_raise_on_junk_in_both_apis(game, actions) -> None:
    m = game_module(game)
    aec = m.raw_env()
    aec.reset(seed=3)
    for action in actions:
        if aec.agents and (aec.terminations[aec.agent_selection] or aec.truncations[aec.agent_selection]):
            aec.step(None)  # PettingZoo's rule for a done agent
            continue
        agent = aec.agent_selection if aec.agents else None
        aec.step(action)  # once agents is empty: nothing happens
        if agent is not None and normalize_action(action) is None:
            assert aec.infos[agent]["action_valid"] is False
    par = m.parallel_env()
    par.reset(seed=3)
    for action in actions:
        live = par.agents[:]
        result = par.step(dict.fromkeys(live, action))
        if not live:
            assert result == ({}, {}, {}, {}, {})
        else:
            assert all(set(part) == set(live) for part in result)
