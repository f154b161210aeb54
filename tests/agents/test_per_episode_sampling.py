"""Sampling is per episode (issue 17): a prompt's random stream is keyed by its row seed only, so an episode
samples the same actions with the same log-probs alone, in a batch of 8 or in another order, in both sampling
paths; and the per-row sampler draws exactly from the warped distribution."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hiergym.agents.generation import RowKeys, Sampler  # noqa: E402
from hiergym.agents.policy import CausalLMPolicy  # noqa: E402

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2}
PROMPTS = ["recent: up -> moved\n#__#\n#P_#\n", "recent: up -> moved\n#__#\n#P_#\n", "x", "#_P#\nactions: up\n",
           "recent: left -> bumped into a wall\n#P_#\n", "ab", "recent: up -> moved\n", "more text\nand more\n"]
SEEDS = [11, 12, 13, 14, 15, 16, 17, 18]


def _same(a, b) -> None:
    assert [o.response_token_ids for o in a] == [o.response_token_ids for o in b]
    for x, y in zip(a, b, strict=True):
        assert x.response_logprobs == pytest.approx(y.response_logprobs, abs=1e-5)


@pytest.mark.parametrize("mode", ["cached", "plain"])
@pytest.mark.parametrize("settings", [{"temperature": 1.0}, {"temperature": 0.7, "top_p": 0.9, "top_k": 30}])
def test_a_prompt_samples_the_same_alone_in_a_batch_and_in_any_order(mode, settings) -> None:
    policy = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation=mode, batch_size=3)
    batch = policy.generate(PROMPTS, max_new_tokens=8, seeds=SEEDS, **settings)
    alone = [policy.generate([p], max_new_tokens=8, seeds=[s], **settings)[0] for p, s in zip(PROMPTS, SEEDS,
                                                                                               strict=True)]
    _same(batch, alone)
    backwards = policy.generate(PROMPTS[::-1], max_new_tokens=8, seeds=SEEDS[::-1], **settings)[::-1]
    _same(batch, backwards)
    # The identical first two prompts have different seeds: different streams, not copies of one sample.
    assert batch[0].response_token_ids != batch[1].response_token_ids
    other = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation="plain" if mode == "cached" else "cached",
                                batch_size=8)
    _same(batch, other.generate(PROMPTS, max_new_tokens=8, seeds=SEEDS, **settings))  # the other path, too


def test_constrained_rows_sample_the_same_alone_and_in_a_batch() -> None:
    choices = [["<action>up</action>", "<action>down</action>", "<action>left</action>"]] * len(PROMPTS)
    for mode in ("cached", "plain"):
        policy = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation=mode)
        batch = policy.generate(PROMPTS, max_new_tokens=4, temperature=1.0, seeds=SEEDS, choices=choices)
        alone = [policy.generate([p], max_new_tokens=4, temperature=1.0, seeds=[s], choices=[c])[0]
                 for p, s, c in zip(PROMPTS, SEEDS, choices, strict=True)]
        _same(batch, alone)
        assert all(o.response_text in choices[0] for o in batch)


@pytest.mark.parametrize("settings", [{"temperature": 1.0}, {"temperature": 0.5}, {"temperature": 1.0, "top_k": 3},
                                      {"temperature": 1.0, "top_p": 0.7}])
def test_the_per_row_sampler_draws_the_warped_distribution(settings) -> None:
    """Gumbel-max with the rows' counter-based noise: 40,000 rows (one seed each) of the same logits sample
    each token at its softmax(warped) probability (within 4.5 standard errors), never a filtered one."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    sampler = Sampler(settings["temperature"], settings.get("top_p", 1.0), settings.get("top_k", 0))
    rows = 40_000
    scores = logits.expand(rows, -1).clone()
    tokens = sampler.choose(scores, RowKeys(range(rows)), step=3)
    warped = logits[None].clone()
    for warper in sampler.warpers:
        warped = warper(None, warped)
    expected = torch.softmax(warped[0].double(), dim=-1)
    counts = torch.bincount(tokens, minlength=len(logits)).double() / rows
    tolerance = 4.5 * torch.sqrt(expected * (1 - expected) / rows) + 1e-12
    assert torch.all((counts - expected).abs() <= tolerance), (counts, expected)
    assert torch.all(counts[expected == 0] == 0)
    # Another position draws independent samples from the same rows (the noise is keyed by the position too):
    # two independent draws differ with probability 1 - sum(p^2).
    again = sampler.choose(scores, RowKeys(range(rows)), step=4)
    differ = (again != tokens).double().mean()
    assert abs(differ - (1 - (expected**2).sum())) < 0.02
    assert torch.equal(sampler.choose(scores[:5], RowKeys(range(5)), step=3), tokens[:5])


def _play(agent, episodes: list[int]) -> dict[int, list]:
    """Play evaluation episodes ``episodes`` (ids, in this order, in one batch): per episode id, its steps'
    (action, response tokens, log-probs)."""
    import gymnasium as gym

    from hiergym.agents.base import EPISODE_SEED
    from hiergym.driver import EnvEpisodes, play_episodes

    envs = [gym.make("hiergym/Sokoban-v0") for _ in episodes]
    resets = [{"seed": e, "options": {"split": "eval_in", "task_id": e}} for e in episodes]
    played = play_episodes(EnvEpisodes(envs, resets), agent, extra_infos=[{EPISODE_SEED: e} for e in episodes],
                           max_steps=4)
    out: dict[int, list] = {e: [] for e in episodes}
    for step in played.steps:
        out[episodes[step.episode]] += [(step.decision.action, g.level, g.response_token_ids, g.response_logprobs)
                                        for g in step.decision.generations]
    return out


@pytest.mark.parametrize("hierarchical", [False, True])
def test_an_episode_plays_the_same_alone_in_a_batch_of_8_and_in_another_order(hierarchical) -> None:
    from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
    from hiergym.agents.llm import LLMAgent, LLMAgentConfig

    def agent(batch_size: int):
        policy = CausalLMPolicy.tiny(seed=0, architecture=ARCH, batch_size=batch_size)
        settings = dict(style="compact", history_window=1, max_new_tokens=8, temperature=1.0, seed=5)
        if hierarchical:
            return HierarchicalAgent(policy, HierarchicalAgentConfig(replan_every=2, **settings),
                                     env_id="hiergym/Sokoban-v0")
        return LLMAgent(policy, LLMAgentConfig(**settings), env_id="hiergym/Sokoban-v0")

    batch = _play(agent(8), list(range(8)))
    shuffled = _play(agent(3), [5, 2, 7, 0, 3, 6, 1, 4])
    alone = _play(agent(8), [3])
    assert sum(len(steps) for steps in batch.values()) >= 16
    for episode in range(8):
        assert [s[:3] for s in shuffled[episode]] == [s[:3] for s in batch[episode]], episode
        for got, want in zip(shuffled[episode], batch[episode], strict=True):
            assert got[3] == pytest.approx(want[3], abs=1e-5)
    assert [s[:3] for s in alone[3]] == [s[:3] for s in batch[3]]
    # Distinct episodes of the same room would otherwise be copies: their streams differ.
    assert len({tuple(map(tuple, (s[2] for s in steps))) for steps in batch.values()}) > 1
