"""A local chat model gets the agent's instructions as its system message (its template adds no system
prompt of its own), and a template without a system role still gets every word of the prompt."""

from __future__ import annotations

import torch

from hiergym.agents.policy import CausalLMPolicy
from hiergym.agents.prompts import executor_prompt

torch.set_num_threads(1)
ROLES = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
             "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>")


def policy_with(template: str) -> CausalLMPolicy:
    policy = CausalLMPolicy.tiny(seed=0, architecture={"hidden_size": 32, "intermediate_size": 64,
                                                       "num_hidden_layers": 1})
    policy.tokenizer.chat_template = template
    policy.use_chat_template = True
    return policy


def full_prompt() -> str:
    return executor_prompt(family="sokoban", style="full", task="push the box onto the target",
                           observation="#####\n#P_XO#\n#####", admissible=["left", "right"])


def test_instructions_go_in_the_system_message() -> None:
    text = policy_with(ROLES).format_prompt(full_prompt())
    system, _, user = text.partition("<|end|><|user|>")
    assert system.startswith("<|system|>You are an expert agent playing Sokoban")
    assert "Symbols: #" in system and "push the box onto the target" in user and "Symbols" not in user


def test_a_template_without_a_system_role_gets_the_whole_prompt() -> None:
    text = policy_with(NO_SYSTEM).format_prompt(full_prompt())
    assert text.startswith("<|user|>You are an expert agent playing Sokoban") and "<|system|>" not in text
    assert "push the box onto the target" in text


def test_compact_prompts_have_no_system_part() -> None:
    compact = executor_prompt(family="sokoban", style="compact", task="t", observation="#P#", admissible=["up"])
    assert policy_with(ROLES).format_prompt(compact).startswith("<|user|>")
