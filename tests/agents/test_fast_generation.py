"""The cached generation path against ``model.generate`` on the tiny model (CPU): the same samples for a seed,
exact behaviour log-probs, and a prefix cache that changes nothing but the work done."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hiergym.agents.generation import PrefixCache  # noqa: E402
from hiergym.agents.policy import CausalLMPolicy  # noqa: E402

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2}
#: Duplicates, shared prefixes of different lengths, one prompt a prefix of another, different lengths.
PROMPTS = ["recent: up -> moved\n#__#\n#P_#\nactions: up, down\n"] * 3 + [
    "recent: up -> moved\n#__#\n#_P#\nactions: up, down\n",
    "recent: up -> moved\n#__#\n",
    "recent: left -> bumped into a wall\n#P_#\n",
    "x",
    "recent: up -> moved\n#__#\n#P_#\nactions: up, down\nmore text after it\n",
] * 2


def _policies(**kwargs) -> dict[str, CausalLMPolicy]:
    return {mode: CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation=mode, batch_size=4, **kwargs)
            for mode in ("plain", "cached")}


@pytest.fixture(scope="module")
def policies() -> dict[str, CausalLMPolicy]:
    return _policies()


@pytest.mark.parametrize("settings", [
    {"temperature": 1.0, "seed": 3},
    {"temperature": 0.7, "top_p": 0.9, "seed": 11},
    {"temperature": 1.3, "top_k": 20, "seed": 5, "stop": ["p", "\n"]},
    {"temperature": 0.0},
])
def test_same_seed_same_samples_as_plain_generate(policies, settings) -> None:
    outs = {mode: policy.generate(PROMPTS, max_new_tokens=10, **settings) for mode, policy in policies.items()}
    plain, cached = outs["plain"], outs["cached"]
    assert [o.response_token_ids for o in cached] == [o.response_token_ids for o in plain]
    assert [o.finish_reason for o in cached] == [o.finish_reason for o in plain]
    assert [o.response_text for o in cached] == [o.response_text for o in plain]
    for a, b in zip(cached, plain, strict=True):
        assert a.response_logprobs == pytest.approx(b.response_logprobs, abs=1e-5)
    if settings.get("stop"):
        assert any(o.finish_reason == "stop" for o in plain)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_samples_do_not_depend_on_how_the_decode_is_batched(monkeypatch, attention) -> None:
    """Micro-batches decoded one by one (``decode_batch_bytes=0``) or merged, rows leaving the batch late (after
    a quarter of it has finished), SDPA over the whole buffers or eager attention over the written columns: the
    same samples as ``model.generate``, in a first call and in a second that reuses what the first cached."""
    from hiergym.agents import generation

    settings = {"max_new_tokens": 10, "temperature": 1.2, "seed": 7, "stop": ["p", "\n"]}
    batches: list[int] = []
    real = generation._decode
    monkeypatch.setattr(generation, "_decode", lambda *a, **k: batches.append(len(a[2])) or real(*a, **k))
    decoded = []
    for budget in (0, 2**30):
        pair = _policies(decode_batch_bytes=budget)
        for policy in pair.values():
            policy.model.set_attn_implementation(attention)
        plain = pair["plain"].generate(PROMPTS, **settings)
        assert len({len(o.response_token_ids) for o in plain}) > 2  # rows finish at different steps
        batches.clear()
        for _ in range(2):  # the second call decodes from the states the first one remembered
            cached = pair["cached"].generate(PROMPTS, **settings)
            assert [o.response_token_ids for o in cached] == [o.response_token_ids for o in plain]
            for a, b in zip(cached, plain, strict=True):
                assert a.response_logprobs == pytest.approx(b.response_logprobs, abs=1e-5)
        decoded.append(list(batches))
    assert decoded == [[4, 4, 4, 1] * 2, [len(PROMPTS)] * 2]


def test_a_repetition_penalty_counts_the_pad_token_as_generate_does_in_merged_batches() -> None:
    """generate penalises the pad token for a row its micro-batch left-pads; a merged decode batch pads other
    rows too, but the penalty follows the plain micro-batch. The pad token's logit is made to tie the best one,
    so whether it is penalised decides the greedy choice."""
    pair = _policies()
    tokenizer = pair["plain"].tokenizer
    with torch.no_grad():
        out = pair["plain"].model(tokenizer(PROMPTS[0], return_tensors="pt").input_ids, output_hidden_states=True)
    hidden, best = out.hidden_states[-1][0, -1], out.logits[0, -1].max()
    for policy in pair.values():
        policy.model.generation_config.repetition_penalty = 1.3
        with torch.no_grad():
            policy.model.get_output_embeddings().weight[tokenizer.pad_token_id] = best * hidden / hidden.dot(hidden)
    outs = {mode: p.generate(PROMPTS, max_new_tokens=10, temperature=0.0) for mode, p in pair.items()}
    assert [o.response_token_ids for o in outs["cached"]] == [o.response_token_ids for o in outs["plain"]]
    assert any(tokenizer.pad_token_id in o.response_token_ids for o in outs["plain"])  # the tie matters


def test_max_new_tokens_below_one_is_refused(policies) -> None:
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        policies["cached"].generate(PROMPTS[:2], max_new_tokens=0)


def test_decode_batches_merge_the_plain_micro_batches_within_the_budget() -> None:
    from hiergym.agents.generation import _decode_batches

    order, lengths = [3, 0, 1, 2, 4], [10, 10, 20, 10, 30]
    assert _decode_batches(order, lengths, 2, 5, budget=0) == [[3, 0], [1, 2], [4]]
    # [3, 0, 1, 2]: 4 rows x (20 + 5) = 100 fits; adding [4] would make 5 x 35.
    assert _decode_batches(order, lengths, 2, 5, budget=100) == [[3, 0, 1, 2], [4]]
    assert _decode_batches(order, lengths, 2, 5, budget=10**6) == [order]
    many = list(range(40))
    assert [len(b) for b in _decode_batches(many, [1] * 40, 2, 1, budget=10**6)] == [16, 16, 8]


def test_prefill_chunks_keep_long_and_short_segments_apart() -> None:
    """Segments sorted by length, so a 3-token segment is not padded to 179 tokens; every node in one chunk,
    and each chunk within the token budget."""
    from hiergym.agents.generation import _Node, _prefill_chunks

    root = _Node((), None)
    parents = [_Node(tuple(range(n)), root) for n in (9, 215)]
    wave = [_Node(tuple(range(n)), parents[k % 2]) for k, n in enumerate([3, 179, 45, 4, 50, 176, 47, 5] * 6)]
    chunks = _prefill_chunks(wave, budget=4096)
    assert sorted(id(n) for c in chunks for n in c) == sorted(id(n) for n in wave)
    for chunk in chunks:
        lengths = [len(n.tokens) for n in chunk]
        assert max(lengths) <= 2 * min(lengths) + 8
        assert len(chunk) * (max(n.parent.length for n in chunk) + max(lengths)) <= 4096 or len(chunk) == 1


def test_recorded_logprobs_equal_the_training_forward(policies) -> None:
    for temperature in (0.8, 0.0):
        outs = policies["cached"].generate(PROMPTS, max_new_tokens=12, temperature=temperature, seed=1)
        scored = policies["cached"].sequence_logprobs([o.prompt_token_ids for o in outs],
                                                      [o.response_token_ids for o in outs],
                                                      temperature=temperature or 1.0)
        for out, logprobs in zip(outs, scored, strict=True):
            assert len(out.response_logprobs) == len(out.response_token_ids) >= 1
            torch.testing.assert_close(torch.tensor(out.response_logprobs), logprobs.detach(), atol=1e-4, rtol=0)


def test_the_prefix_cache_is_reused_across_calls_and_dropped_when_the_weights_change() -> None:
    policy = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation="cached")
    plain = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation="plain")
    first = policy.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=2)
    policy.generation_stats.clear()
    again = policy.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=2)
    assert [o.response_token_ids for o in again] == [o.response_token_ids for o in first]
    # Everything but each prompt's last token (fed by the first decode step) comes from the cache.
    assert policy.generation_stats["prompt_tokens_computed"] == len(PROMPTS)
    # A prompt that extends an earlier prompt and its response (in tokens: the untrained model's bytes need not
    # round-trip through text) computes only what is new: the response's last token, the new ones.
    more = policy.tokenizer(" and then", add_special_tokens=False)["input_ids"]
    extended = [*first[0].prompt_token_ids, *first[0].response_token_ids, *more]
    policy.generation_stats.clear()
    policy._sample([extended], [0], 2, 0.0, 1.0, 0, [])
    assert policy.generation_stats["prompt_tokens_computed"] == 1 + len(more)
    # An optimizer step changes the weights in place: the cache must not serve the old states.
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.5)
    loss = policy.sequence_logprobs([first[0].prompt_token_ids], [first[0].response_token_ids])[0].sum()
    loss.backward()
    optimizer.step()
    plain.model.load_state_dict(policy.model.state_dict())
    after = policy.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=2)
    reference = plain.generate(PROMPTS, max_new_tokens=6, temperature=1.0, seed=2)
    assert [o.response_token_ids for o in after] == [o.response_token_ids for o in reference]
    for a, b in zip(after, reference, strict=True):
        assert a.response_logprobs == pytest.approx(b.response_logprobs, abs=1e-5)


def test_prefix_cache_budget_evicts_least_recently_used() -> None:
    cache = PrefixCache(max_tokens=20)
    a = cache.insert([1, 2, 3, 4, 5, 6])
    cache.insert([1, 2, 3, 7, 8])
    assert cache.tokens == 8 and a.length == 6 and a.parent.length == 3  # split after the shared [1, 2, 3]
    for n in range(5):
        cache.insert([9, n] * 3)
    cache.evict()
    assert cache.tokens <= 16
    # The oldest leaves went first: the newest sequence is still there in full.
    created: list = []
    cache.insert([9, 4] * 3, created)
    assert created == []
    zero = PrefixCache(max_tokens=0)
    zero.insert([1, 2, 3])
    zero.evict()
    assert zero.tokens == 0 and not zero.root.children


@pytest.mark.parametrize("hierarchical", [False, True])
def test_an_episode_plays_the_same_with_and_without_reuse(hierarchical) -> None:
    """B x G group rollouts (identical first prompts, later prompts that share prefixes) sampled at T = 1: the
    cached path with its cache kept between calls, without it, and model.generate choose the same actions with
    the same log-probs (flat agent; planner and executor sharing one policy)."""
    from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
    from hiergym.agents.llm import LLMAgent, LLMAgentConfig
    from hiergym.driver import GroupEpisodes, play_episodes
    from hiergym.envs.vector import make_group_vec

    played = {}
    for label, kwargs in (("plain", {"generation": "plain"}), ("reuse", {"generation": "cached"}),
                          ("no reuse", {"generation": "cached", "prefix_cache_tokens": 0})):
        policy = CausalLMPolicy.tiny(seed=0, architecture=ARCH, **kwargs)
        settings = dict(style="compact", history_window=1, max_new_tokens=8, temperature=1.0, seed=0)
        agent = (HierarchicalAgent(policy, HierarchicalAgentConfig(replan_every=2, **settings),
                                   env_id="hiergym/Sokoban-v0") if hierarchical
                 else LLMAgent(policy, LLMAgentConfig(**settings), env_id="hiergym/Sokoban-v0"))
        vec = make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=3, seed=0, max_episode_steps=4)
        try:
            steps = play_episodes(GroupEpisodes(vec), agent).steps
        finally:
            vec.close()
        played[label] = [(s.episode, s.decision.action, g.response_token_ids, g.response_logprobs)
                         for s in steps for g in s.decision.generations]
        if label == "reuse":
            assert policy.generation_stats["prompt_tokens_computed"] < policy.generation_stats["prompt_tokens_seen"] / 3
    assert len(played["plain"]) >= 12
    for label in ("reuse", "no reuse"):
        assert [row[:3] for row in played[label]] == [row[:3] for row in played["plain"]], label
        for got, want in zip(played[label], played["plain"], strict=True):
            assert got[3] == pytest.approx(want[3], abs=1e-5)


def test_unknown_generation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="generation must be one of"):
        CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation="fast")


# The untrained model's logits are nearly flat (std ~0.13): at T = 0.1 the penalty moves the sampled tokens.
@pytest.mark.parametrize("temperature", [0.1, 0.0])
def test_a_models_repetition_penalty_is_applied_as_generate_applies_it(temperature) -> None:
    policies = _policies()
    for policy in policies.values():
        policy.model.generation_config.repetition_penalty = 1.3
    assert policies["cached"].generation_mode() == "cached"
    outs = {mode: policy.generate(PROMPTS, max_new_tokens=10, temperature=temperature, seed=4)
            for mode, policy in policies.items()}
    assert [o.response_token_ids for o in outs["cached"]] == [o.response_token_ids for o in outs["plain"]]
    if temperature > 0:  # the penalty changed what was sampled
        unpenalised = CausalLMPolicy.tiny(seed=0, architecture=ARCH, generation="cached", batch_size=4)
        other = unpenalised.generate(PROMPTS, max_new_tokens=10, temperature=temperature, seed=4)
        assert [o.response_token_ids for o in other] != [o.response_token_ids for o in outs["plain"]]
