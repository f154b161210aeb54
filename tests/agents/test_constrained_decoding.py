"""Decoding restricted to the admissible actions: the trie, the masked log-probs, the policy's two sampling paths,
the update's scoring under the same masks, and the agents that use it."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import hiergym  # noqa: F401 - registers the envs
from hiergym.agents.constraint import (
    ChoiceTrie,
    admissible_choices,
    choice_sequences,
    mask_logits,
    masked_log_softmax,
    number_differences,
    task_spans,
    text_spans,
)
from hiergym.agents.generation import packed_logprobs
from hiergym.agents.llm import LLMAgent, LLMAgentConfig
from hiergym.agents.policy import CausalLMPolicy

torch.set_num_threads(1)

CHOICES = ["go to cabinet 1", "go to cabinet 10", "take soapbar 2 from cabinet 3", "look"]


@pytest.fixture(scope="module")
def policy() -> CausalLMPolicy:
    return CausalLMPolicy.tiny(seed=3, architecture={"hidden_size": 32, "intermediate_size": 64,
                                                     "num_hidden_layers": 2, "num_attention_heads": 2,
                                                     "num_key_value_heads": 2})


def test_trie_allows_only_continuations_and_ends_prefix_choices_with_eos(policy):
    eos = policy.tokenizer.eos_token_id
    sequences = choice_sequences(policy.tokenizer, CHOICES, eos)
    trie = ChoiceTrie(sequences)
    first = sorted({s[0] for s in sequences})
    assert trie.allowed([]) == first
    one = policy.tokenizer("go to cabinet 1", add_special_tokens=False)["input_ids"]
    # After "go to cabinet 1" the response may end (EOS) or continue to "10".
    assert trie.allowed(one) == sorted([eos, policy.tokenizer("0", add_special_tokens=False)["input_ids"][0]])
    assert trie.allowed([*one, eos]) is None  # complete: nothing more is constrained
    assert trie.allowed([9999]) is None  # left the trie
    assert trie.along(sequences[1]) is not None and len(trie.along(sequences[1])) == len(sequences[1])
    assert trie.along([9999]) is None
    # A choice that ends with a stop string needs no EOS.
    tagged = choice_sequences(policy.tokenizer, ["<action>look</action>"], eos, stops=["</action>"])[0]
    assert tagged[-1] != eos


def test_masked_log_softmax_equals_hand_computation_on_a_toy_vocabulary():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]])
    allowed = [[0, 2], [3]]
    step, entropy = masked_log_softmax(logits, 2.0, allowed, return_entropy=True)
    z = math.exp(1.0 / 2) + math.exp(0.5 / 2)
    assert step[0, 0].item() == pytest.approx(1.0 / 2 - math.log(z), abs=1e-6)
    assert step[0, 2].item() == pytest.approx(0.5 / 2 - math.log(z), abs=1e-6)
    assert step[0, 1].item() == float("-inf") and step[1, 0].item() == float("-inf")
    assert step[1, 3].item() == pytest.approx(0.0, abs=1e-7)  # the only continuation has probability 1
    p = [math.exp(1.0 / 2) / z, math.exp(0.5 / 2) / z]
    assert entropy[0].item() == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-6)
    assert entropy[1].item() == pytest.approx(0.0, abs=1e-7)
    # Gradients stay finite through the masked entries.
    leaf = logits.clone().requires_grad_(True)
    out, ent = masked_log_softmax(leaf, 1.0, allowed, return_entropy=True)
    (out[0, 0] + ent.sum()).backward()
    assert torch.isfinite(leaf.grad).all()
    assert mask_logits(logits, [None, [2]])[0].tolist() == logits[0].tolist()


@pytest.mark.parametrize("generation", ["cached", "plain"])
def test_constrained_samples_are_choices_with_log_probs_the_update_recomputes(policy, generation):
    policy.generation = generation
    prompts = [f"task {k}: clean the soapbar\n> " for k in range(6)]
    choices = [CHOICES, CHOICES[:2], ["look"], None, CHOICES, CHOICES[1:]]
    try:
        outs = policy.generate(prompts, max_new_tokens=4, temperature=1.0, seed=11, choices=choices)
    finally:
        policy.generation = "cached"
    for out, allowed in zip(outs, choices, strict=True):
        if allowed is None:
            assert out.response_allowed is None and out.choices is None
            continue
        assert out.response_text in allowed  # valid by construction, despite max_new_tokens=4
        assert out.choices == allowed
        assert len(out.response_allowed) == len(out.response_token_ids)
    single = outs[2]
    assert all(lp == pytest.approx(0.0, abs=1e-6) for lp in single.response_logprobs)  # one choice: no choice
    masks = [o.response_allowed for o in outs]
    prompt_ids = [o.prompt_token_ids for o in outs]
    responses = [o.response_token_ids for o in outs]
    with torch.no_grad():
        scored = policy.sequence_logprobs(prompt_ids, responses, temperature=1.0, allowed=masks)
        packed = packed_logprobs(policy.model, policy.tokenizer.pad_token_id, prompt_ids, responses, [1.0] * 6,
                                 allowed=masks)["logprobs"]
    for out, lp, pk in zip(outs, scored, packed, strict=True):
        assert torch.allclose(lp, torch.tensor(out.response_logprobs), atol=1e-4)
        assert torch.allclose(pk, lp, atol=1e-4)


def test_both_paths_draw_the_same_constrained_samples(policy):
    prompts = [f"room {k}\n> " for k in range(5)]
    choices = [CHOICES] * 5
    samples = {}
    for generation in ("cached", "plain"):
        policy.generation = generation
        policy.prefix_cache.clear()
        samples[generation] = [o.response_text for o in policy.generate(prompts, max_new_tokens=8,
                                                                           temperature=1.0, seed=5, choices=choices)]
    policy.generation = "cached"
    assert samples["cached"] == samples["plain"]


def test_update_scores_under_the_rollout_masks_ratio_one(policy):
    from hiergym.training.optimize import TrainSequence, _training_logprobs

    outs = policy.generate(["a\n> ", "b\n> ", "a\n> "], max_new_tokens=8, temperature=1.0, seed=2,
                           choices=[CHOICES] * 3)
    sequences = [TrainSequence(o.prompt_token_ids, o.response_token_ids, o.response_logprobs, 1.0,
                               allowed=o.response_allowed) for o in outs]
    for packed in (True, False):
        train = _training_logprobs(policy, sequences, micro_batch_size=2, packed=packed,
                                   forwarded={"forward_tokens": 0})
        for t, s in zip(train, sequences, strict=True):
            assert torch.allclose(t, torch.tensor(s.old_logprobs), atol=1e-4)
    # Unmasked, the same tokens have lower log-probs (the constrained distribution renormalises).
    free = policy.sequence_logprobs([s.prompt_ids for s in sequences], [s.response_ids for s in sequences])
    assert all(f.sum().item() < sum(s.old_logprobs) for f, s in zip(free, sequences, strict=True))


def test_admissible_choices_skip_templates_and_add_subgoal_done():
    assert admissible_choices(["search[<query>]"], "compact") is None
    assert admissible_choices([], "compact") is None
    assert admissible_choices(["look", "look"], "full") == ["<action>look</action>"]
    assert admissible_choices(["look"], "compact", subgoal_done=True) == ["look", "<subgoal_done/>look"]


def test_task_spans_fill_a_template_slot_with_runs_of_the_tasks_words():
    assert task_spans("red [big]  <shoes>") == ["red", "red big", "red big shoes", "big", "big shoes", "shoes"]
    choices = admissible_choices(["search[<query>]"], "compact", task="find red shoes")
    assert sorted(choices) == sorted(f"search[{s}]" for s in ("find", "find red", "find red shoes", "red",
                                                              "red shoes", "shoes"))
    assert admissible_choices(["click[a]", "search[<query>]"], "compact", task="x", subgoal_done=True) == [
        "click[a]", "search[x]", "<subgoal_done/>click[a]", "<subgoal_done/>search[x]"]
    assert admissible_choices(["search[<query>]"], "compact", task="") is None  # nothing to copy: unconstrained
    assert admissible_choices(["go[<from>][<to>]"], "compact", task="a b") is None  # two slots: unconstrained
    assert admissible_choices(["look"], "compact", task="a b") == ["look"]  # no slot: as "admissible"
    assert len(task_spans(" ".join(map(str, range(100))))) == 64 * 65 // 2  # the first 64 words


def test_task_spans_agent_searches_with_a_run_of_the_instruction(policy):
    """On WebShop's search page a fresh model writes any text; constrained to the task's spans its query is
    a run of the instruction's words, and the log-probs the update recomputes under the recorded masks match."""
    from hiergym.driver import EnvEpisodes, play_episodes

    agent = LLMAgent(policy, LLMAgentConfig(style="compact", max_new_tokens=8, temperature=1.0,
                                            action_constraint="task_spans"), env_id="hiergym/WebShop-v0")
    envs = [gym.make("hiergym/WebShop-v0") for _ in range(3)]
    played = play_episodes(EnvEpisodes(envs, [{"seed": s} for s in range(3)]), agent, max_steps=1)
    assert len(played.steps) == 3
    for step in played.steps:
        query = step.decision.action.removeprefix("search[").removesuffix("]")
        assert step.decision.action.startswith("search[") and query in task_spans(step.transition.info["task"])
        assert not step.transition.invalid
        generation = step.decision.generations[0]
        with torch.no_grad():
            scored = policy.sequence_logprobs([generation.prompt_token_ids], [generation.response_token_ids],
                                              temperature=1.0, allowed=[generation.response_allowed])[0]
        assert torch.allclose(scored, torch.tensor(generation.response_logprobs), atol=1e-4)


def test_observation_spans_fill_answers_from_what_was_shown_and_expressions_from_its_numbers():
    page = "Torhaven (city)\nTorhaven was founded in 1107. It has a population of 2,294,000."
    spans = text_spans([page])
    assert {"Torhaven", "1107", "2,294,000", "founded in 1107", "city"} <= set(spans)
    assert "1107 It" not in spans and "Torhaven city Torhaven" not in spans  # runs stay inside a sentence/line
    assert all(1 <= len(s.split()) <= 4 for s in spans) and len(spans) == len(set(spans))
    assert number_differences([page, "born in 1989"]) == [
        "1107 - 2294000", "1107 - 1989", "2294000 - 1107", "2294000 - 1989", "1989 - 1107", "1989 - 2294000"]
    choices = admissible_choices(["lookup[Torhaven]", "search[<query>]", "calculate[<expression>]",
                                  "answer[<answer>]"], "compact", task="When was Torhaven founded?", seen=[page])
    assert "lookup[Torhaven]" in choices and "search[was Torhaven]" in choices
    assert "answer[1107]" in choices and "answer[2,294,000]" in choices and "calculate[2294000 - 1107]" in choices
    assert "answer[1108]" not in choices and "search[1107]" not in choices  # queries still copy the task


def test_observation_spans_agent_answers_with_text_the_episode_showed(policy):
    """ToolQA lists only lookups; under observation_spans the agent also gets the family's templates, and an
    answer it writes is a run of words from the question or a tool result of its own episode."""
    from hiergym.driver import EnvEpisodes, play_episodes

    agent = LLMAgent(policy, LLMAgentConfig(style="compact", max_new_tokens=200, temperature=1.0,
                                            action_constraint="observation_spans"), env_id="hiergym/ToolQA-v0")
    envs = [gym.make("hiergym/ToolQA-v0") for _ in range(4)]
    played = play_episodes(EnvEpisodes(envs, [{"seed": s} for s in range(4)]), agent, max_steps=4)
    shown: dict[int, list[str]] = {}
    for step in played.steps:
        episode = shown.setdefault(step.episode, [])
        action, task = step.decision.action, step.transition.info["task"]
        tool, argument = action.split("[", 1)
        argument = argument.removesuffix("]")
        assert tool in ("lookup", "search", "calculate", "answer"), action
        if tool == "answer":
            assert argument in text_spans([task, *episode])
        if tool == "calculate":
            assert argument in number_differences([task, *episode])
        episode.append(step.transition.observation)
    assert {s.decision.action.split("[")[0] for s in played.steps} - {"lookup"}  # not only the listed lookups


@pytest.mark.parametrize("mode", ["flat", "hierarchical"])
def test_constrained_agent_only_plays_admissible_actions(policy, mode):
    from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
    from hiergym.driver import EnvEpisodes, play_episodes

    common = dict(style="compact", max_new_tokens=8, temperature=1.0, action_constraint="admissible")
    agent = (LLMAgent(policy, LLMAgentConfig(**common), env_id="hiergym/ALFWorld-v0") if mode == "flat" else
             HierarchicalAgent(policy, HierarchicalAgentConfig(planner_max_new_tokens=8, **common),
                               env_id="hiergym/ALFWorld-v0"))
    envs = [gym.make("hiergym/ALFWorld-v0") for _ in range(2)]
    played = play_episodes(EnvEpisodes(envs, [{"seed": 1}, {"seed": 2}]), agent, max_steps=6)
    assert played.steps
    assert all(r.invalid_actions == 0 and r.parse_errors == 0 for r in played.results)
    executor = [g for s in played.steps for g in s.decision.generations if g.level == "executor"]
    assert executor and all(g.response_allowed is not None for g in executor)
    assert all(g.response_allowed is None for s in played.steps for g in s.decision.generations
               if g.level == "planner")


def test_config_rejects_an_unknown_constraint():
    with pytest.raises(ValueError, match="action_constraint"):
        LLMAgentConfig(action_constraint="grammar")
