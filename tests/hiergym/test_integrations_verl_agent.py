"""hiergym.integrations.verl_agent: the verl-agent-style environment manager over make_group_vec."""

from __future__ import annotations

import numpy as np
import pytest

import hiergym
from hiergym.agents.parsing import parse_action
from hiergym.integrations import project_action, project_actions, task_seed
from hiergym.integrations.verl_agent import HiergymEnvironmentManager, make_envs

ENV = "hiergym/Sokoban-v0"


@pytest.fixture
def manager():
    m = HiergymEnvironmentManager.make(ENV, num_tasks=3, group_size=2, seed=0, end_on_dead_end=False)
    yield m
    m.close()


def test_reset_gives_text_no_image_and_state_key_anchors(manager: HiergymEnvironmentManager) -> None:
    obs, infos = manager.reset()
    assert set(obs) == {"text", "image", "anchor"} and obs["image"] is None
    assert len(obs["text"]) == len(obs["anchor"]) == len(infos) == 6
    assert obs["anchor"] == [info["state_key"] for info in infos] == list(manager.envs.state_keys)
    # The G copies of a task start from the same state: same anchor, same prompt.
    for g in range(3):
        assert obs["anchor"][2 * g] == obs["anchor"][2 * g + 1]
        assert obs["text"][2 * g] == obs["text"][2 * g + 1]
    assert len({obs["anchor"][0], obs["anchor"][2], obs["anchor"][4]}) == 3
    assert "<action>" in obs["text"][0] and "Admissible actions" in obs["text"][0]


def test_step_rewards_dones_anchors_and_invalid_flags(manager: HiergymEnvironmentManager) -> None:
    obs, infos = manager.reset()
    admissible = infos[0]["admissible_actions"]
    before = list(obs["anchor"])
    texts = [f"<think>go</think><action>{admissible[0]}</action>", "no action here"] * 3
    next_obs, rewards, dones, step_infos = manager.step(texts)
    assert rewards.dtype == np.float32 and dones.dtype == bool and rewards.shape == dones.shape == (6,)
    assert next_obs["anchor"] == [i["state_key"] for i in step_infos] == list(manager.envs.state_keys)
    assert [i["anchor"] for i in step_infos] == before  # the state each action was taken in
    assert int(step_infos[1]["is_action_valid"]) == 0 and step_infos[1]["projected_action"] == ""
    assert step_infos[1]["action_valid"] is False  # the empty action is an invalid action for the env
    assert int(step_infos[0]["is_action_valid"]) == 1 and step_infos[0]["projected_action"] == admissible[0]
    # A parsed action the env rejects is invalid too.
    blocked = next(a for a in ("up", "down", "left", "right") if a not in infos[2]["admissible_actions"])
    _, _, _, more = manager.step(["", "", f"<action>{blocked}</action>", "", "", ""])
    assert int(more[2]["is_action_valid"]) == 0 and more[2]["action_valid"] is False
    assert "1. " in manager.build_text_obs()[0]  # the history window shows the steps taken


def test_finished_copies_stay_done_with_zero_reward_and_success_is_counted(
        manager: HiergymEnvironmentManager) -> None:
    manager.reset()
    plans = manager.envs.call("expert_plan")
    wins = np.zeros(6, dtype=bool)
    for t in range(max(len(p) for p in plans) + 2):
        # Even copies follow the expert; odd copies stall with an unreadable output.
        texts = [f"<action>{plans[i][t]}</action>" if i % 2 == 0 and t < len(plans[i]) else "???" for i in range(6)]
        _, rewards, dones, infos = manager.step(texts)
        for i in range(6):
            if wins[i]:
                assert dones[i] and rewards[i] == 0.0 and not infos[i]["active"]
        wins |= np.array([bool(info["won"]) for info in infos])
    assert wins.tolist() == [True, False] * 3
    assert manager.success_evaluator()["success_rate"].tolist() == [1.0, 0.0] * 3


def test_success_evaluator_reads_verl_agent_step_records(manager: HiergymEnvironmentManager) -> None:
    total_batch_list = [[{"active_masks": True}, {"active_masks": True}, {"active_masks": False}],
                        [{"active_masks": True}, {"active_masks": False}, {"active_masks": False}]]
    total_infos = [[{"won": False}, {"won": True}, {"won": False}], [{"won": False}, {"won": True}, {"won": True}]]
    result = manager.success_evaluator(total_infos=total_infos, total_batch_list=total_batch_list)
    assert result["success_rate"].tolist() == [1.0, 0.0]


def test_reset_with_task_ids_from_env_kwargs(manager: HiergymEnvironmentManager) -> None:
    per_copy = [{"task_id": t} for t in (5, 5, 7, 7, 9, 9)]
    obs, _ = manager.reset(kwargs=per_copy)
    fixed = hiergym.make_group_vec(ENV, num_tasks=3, group_size=1, end_on_dead_end=False)
    _, infos = fixed.reset(task_ids=[5, 7, 9])
    fixed.close()
    assert obs["anchor"][::2] == [info["state_key"] for info in infos]
    again, _ = manager.reset(kwargs={"task_ids": [5, 7, 9]})
    assert again["anchor"] == obs["anchor"]
    with pytest.raises(ValueError, match="different tasks"):
        manager.reset(kwargs=[{"task_id": t} for t in (1, 2, 3, 3, 4, 4)])
    assert task_seed("train", 5) == task_seed("train", 5) != task_seed("eval_in", 5)


def test_make_envs_validation_set_is_fixed() -> None:
    train, val = make_envs(ENV, train_batch_size=2, group_n=2, val_batch_size=3, seed=1)
    try:
        assert train.num_envs == 4 and val.num_envs == 3
        first, _ = val.reset()
        train.reset()
        second, _ = val.reset()
        assert first["anchor"] == second["anchor"]
        a, _ = train.reset()
        b, _ = train.reset()
        assert a["anchor"] != b["anchor"]  # training draws new tasks
    finally:
        train.close()
        val.close()


def test_projection_is_hiergyms_parser() -> None:
    admissible = ["up", "down", "push left"]
    for text in ["<think>x</think><action>UP</action>", "down", "< Action > push   left </action>", "jump", "",
                 "<action>up</action> then <action>down</action>"]:
        parsed = parse_action(text, admissible)
        assert project_action(text, admissible) == ((parsed.action, True) if parsed.ok else ("", False))
    actions, valids = project_actions(["<action>up</action>", "nonsense"], [admissible, admissible])
    assert actions == ["up", ""] and valids == [1, 0]
    with pytest.raises(ValueError):
        project_actions(["a"], [admissible, admissible])


def test_the_example_in_docs_vector_md_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "vector.md").read_text()
    section = text[text.index("## verl-agent's environment manager"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/vector.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "[1. 1. 1. 1. 1. 1. 1. 1.]"
