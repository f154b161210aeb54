"""The optimisation steps: the clipped policy-gradient update over recorded generations, behaviour cloning,
and the value head of the value-based estimators.

Each generation of a rollout (planner or executor) is one *sequence*: its prompt tokens, its sampled
response tokens, their behaviour log-probs, and the advantage of its row. The update recomputes the
log-probs under the current weights and minimises :func:`hiergym.training.loss.clipped_policy_loss`, over
several epochs of shuffled micro-batches with gradient accumulation and gradient clipping.

Scoring is *packed* by default (:func:`hiergym.agents.generation.packed_logprobs`): inside each optimizer step
the sequences are ordered by prompt, and each micro-batch forwards the shared prefixes of its prompts and each
distinct prompt once, every response attending to its prompt's KV, so the many responses of one prompt (the G
copies of a group at their first step, states the copies share) and the common start of the prompts cost one
forward. The gradient is the unpacked one up to float rounding (``tests/training/test_packed_scoring.py``).

``tis_cap`` turns on truncated importance sampling (TIS, as verl and TRL apply it to vLLM rollouts): the
training forward's log-probs before the update, ``logp_old``, are computed first; the PPO ratio is taken against
them, and each token's policy-gradient term is weighted by ``min(exp(logp_old - logp_rollout), tis_cap)``, which
corrects for a sampler whose numbers differ from the training forward (bf16 kernels on a GPU); the mismatch
between the two is reported (``logprob_mismatch``, ``tis_weight_mean``, ``tis_clipped_fraction``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hiergym.agents.generation import packed_logprobs
from hiergym.agents.policy import pad_token_rows
from hiergym.training.loss import LossConfig, clipped_policy_loss, value_loss


@dataclass
class TrainSequence:
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    level: str = "executor"
    #: Temperature the response was sampled at (log-probs are recomputed at the same one).
    temperature: float = 1.0
    #: Critic targets for value-based estimators (NaN when unused).
    value_target: float = float("nan")
    old_value: float = float("nan")
    #: Constrained decoding's allowed tokens per response position (scored under the same masks), or None.
    allowed: list[list[int]] | None = None


class ValueHead(torch.nn.Module):
    """A scalar value of the prompt (the state the decision is made in), read from the LM's last hidden
    state at the prompt's final token."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
        device = self.linear.weight.device
        ids, mask = pad_token_rows(prompts, pad_id)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        last = torch.tensor([len(p) - 1 for p in prompts], device=device)
        hidden = out.hidden_states[-1][torch.arange(len(prompts), device=device), last]
        return self.from_hidden(hidden)

    def packed(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
        """The same values, the prompts' shared prefixes forwarded once (``packed_logprobs``): the G copies of
        a group and the turns of an episode repeat most of their prompts."""
        hidden = packed_logprobs(model, pad_id, prompts, [[] for _ in prompts], [1.0] * len(prompts),
                                 return_hidden=True)["hidden"]
        return self.from_hidden(torch.stack(hidden))

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """The values of given last hidden states at the prompts' final tokens ([rows, hidden size])."""
        return self.linear(hidden.float()).squeeze(-1)


def _padded(rows: Sequence[Sequence[float]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    values = torch.zeros((len(rows), width), dtype=torch.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if len(r):
            values[i, : len(r)] = torch.tensor(list(r), dtype=torch.float32)
            mask[i, : len(r)] = 1.0
    return values.to(device), mask.to(device)


def _stack_padded(tensors: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = tensors[0].new_zeros((len(tensors), width)) if tensors else torch.zeros((0, width))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def policy_update(
    policy,
    optimizer: torch.optim.Optimizer,
    sequences: Sequence[TrainSequence],
    *,
    epochs: int = 1,
    mini_batches: int = 1,
    micro_batch_size: int = 32,
    loss: LossConfig | None = None,
    reference=None,
    max_grad_norm: float = 1.0,
    value_head: ValueHead | None = None,
    rng: random.Random | None = None,
    sharding: Any = None,
    packed: bool = True,
    tis_cap: float | None = None,
    lr_warmup_steps: int = 0,
    learning_rate: float | None = None,
    **loss_overrides: Any,
) -> dict[str, float]:
    """One PPO-style update on a finished batch of generations. Returns averaged metrics.

    ``loss`` (a :class:`~hiergym.training.loss.LossConfig`, its defaults when None) sets the loss terms;
    ``loss_overrides`` replace single fields of it (``clip_high=0.28``).

    Each epoch shuffles the sequences and splits them into ``mini_batches`` optimizer steps; each step
    accumulates gradients over micro-batches of ``micro_batch_size`` distinct sequences (identical rows, the
    same prompt and response in several rollouts, share one forward/backward and stay in one mini-batch).

    ``sharding`` (``hiergym.training.distributed``, data-parallel ranks): ``sequences`` are this rank's share;
    the sets, their shuffle, the mini-batches and every share are those of the global batch, and the gradients
    are summed over the ranks before each step, so the step equals one process's on the whole batch.

    ``packed`` scores each micro-batch with its prompts' shared prefixes forwarded once (the module docstring;
    unpacked when the model uses gradient checkpointing, which drops the cache); ``tis_cap`` turns on
    truncated importance sampling against the training forward's log-probs. ``lr_warmup_steps`` (with
    ``learning_rate``): see :func:`warm_up_learning_rate`.
    """
    loss = dataclasses.replace(loss or LossConfig(), **loss_overrides)
    usable = [s for s in sequences if s.response_ids]
    shards = sharding.global_sets(usable) if sharding is not None else None  # a collective: every rank calls
    if (shards.count == 0) if shards is not None else not usable:
        return {"pg_loss": 0.0, "sequences": 0}
    if tis_cap is not None and tis_cap <= 0:
        raise ValueError(f"tis_cap must be > 0 (or None), got {tis_cap}")
    if tis_cap is not None and shards is not None:
        raise ValueError("tis_cap (truncated importance sampling) runs in one process for now; drop it under torchrun")
    rng = rng or random.Random(0)
    total_tokens = sum(len(s.response_ids) for s in usable)
    identical_sets = identical_sequences(usable)
    model = policy.model
    # FSDP's forwards are collectives: every rank must run the same number, so its micro-batches stay unpacked.
    packed = packed and not _checkpointing(model) and not (shards is not None and sharding.dist.fsdp)
    forwarded = {"forward_tokens": 0}
    metrics: dict[str, list[float]] = {k: [] for k in ("loss", "pg_loss", "kl", "entropy", "clip_fraction",
                                                        "approx_kl", "grad_norm", "value_loss")}
    train_old: list[torch.Tensor] | None = None
    if tis_cap is not None:
        # The training forward's log-probs under the weights that sampled the batch (before any step).
        model.eval()
        train_old = _training_logprobs(policy, [usable[same[0]] for same in identical_sets], micro_batch_size,
                                       packed, forwarded)
        metrics.update(_mismatch_metrics([[usable[i] for i in same] for same in identical_sets], train_old,
                                         tis_cap))
    model.train()
    for _ in range(epochs):
        # Shuffle whole sets of identical rows, so that each set shares one forward/backward in its mini-batch.
        order = list(range(len(identical_sets) if shards is None else shards.count))
        rng.shuffle(order)
        for mini in np.array_split(np.array(order), max(1, min(mini_batches, len(order)))):
            batch, totals = (([[usable[i] for i in identical_sets[g]] for g in mini], None) if shards is None
                             else shards.mini_batch(usable, mini))
            if lr_warmup_steps and learning_rate is not None:
                warm_up_learning_rate(optimizer, learning_rate, lr_warmup_steps)
            _accumulate_and_step(
                policy, optimizer, batch, metrics,
                micro_batch_size=micro_batch_size, aggregation=loss.aggregation,
                loss_options=loss.policy_loss_options(), reference=reference, value_head=value_head,
                value_coef=loss.value_coef, max_grad_norm=max_grad_norm, totals=totals,
                finish=shards.finish if shards is not None else None,
                packed=packed, forwarded=forwarded,
                train_old=[train_old[g] for g in mini] if train_old is not None else None, tis_cap=tis_cap)
    model.eval()
    summary = {k: float(np.mean(v)) for k, v in metrics.items() if v}
    summary["sequences"] = len(usable)
    summary["unique_sequences"] = len(identical_sets)
    summary["tokens"] = total_tokens
    # What the update runs through the model: unpacked, every distinct sequence, prompt and response, once per
    # epoch; packed, the tokens the packed forwards computed (shared prefixes once per micro-batch).
    summary["forward_tokens"] = forwarded["forward_tokens"] if packed else (
        epochs * sum(len(usable[same[0]].prompt_ids) + len(usable[same[0]].response_ids) for same in identical_sets))
    return summary


def _checkpointing(model) -> bool:
    """Whether the model recomputes activations in backward (transformers then drops the KV cache)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _by_prompt(items: Sequence[Any], key) -> list[int]:
    """Positions of ``items`` ordered by (temperature, prompt tokens) of ``key(item)``: sequences that share a
    prompt, or a prompt's prefix, land side by side in the same micro-batch."""
    return sorted(range(len(items)), key=lambda i: (key(items[i]).temperature, key(items[i]).prompt_ids))


def _score(policy, prompts: list[list[int]], responses: list[list[int]], temperature: float, *, packed: bool,
           return_entropy: bool = False, return_hidden: bool = False,
           forwarded: dict[str, int] | None = None, allowed: list | None = None
           ) -> tuple[list[torch.Tensor], list[torch.Tensor], list]:
    """(log-probs, entropies, last hidden states at the prompts' ends) of one micro-batch, packed or not;
    ``allowed``: per pair the constrained-decoding masks (or None)."""
    if allowed is not None and all(a is None for a in allowed):
        allowed = None
    if packed:
        out = packed_logprobs(policy.model, policy.tokenizer.pad_token_id, prompts, responses,
                              [temperature] * len(prompts), return_entropy=return_entropy,
                              return_hidden=return_hidden, stats=forwarded, allowed=allowed)
        return out["logprobs"], out["entropy"], out["hidden"]
    if return_entropy:
        logps, entropies = policy.sequence_logprobs(prompts, responses, temperature=temperature, return_entropy=True,
                                                    allowed=allowed)
        return logps, entropies, []
    return policy.sequence_logprobs(prompts, responses, temperature=temperature, allowed=allowed), [], []


@torch.no_grad()
def _training_logprobs(policy, sequences: Sequence[TrainSequence], micro_batch_size: int, packed: bool,
                       forwarded: dict[str, int]) -> list[torch.Tensor]:
    """The training forward's log-probs of every sequence under the current weights (no gradients)."""
    result: list[torch.Tensor | None] = [None] * len(sequences)
    order = _by_prompt(sequences, lambda s: s)
    for start in range(0, len(order), micro_batch_size):
        rows = order[start:start + micro_batch_size]
        for temperature in sorted({sequences[i].temperature for i in rows}):
            part = [i for i in rows if sequences[i].temperature == temperature]
            logps, _, _ = _score(policy, [sequences[i].prompt_ids for i in part],
                                 [sequences[i].response_ids for i in part], temperature, packed=packed,
                                 forwarded=forwarded, allowed=[sequences[i].allowed for i in part])
            if not packed:
                forwarded["forward_tokens"] += sum(len(sequences[i].prompt_ids) + len(sequences[i].response_ids)
                                                   for i in part)
            for i, lp in zip(part, logps, strict=True):
                result[i] = lp.detach().float()
    return [r for r in result if r is not None]


def _mismatch_metrics(sets: list[list[TrainSequence]], train_old: list[torch.Tensor], cap: float
                      ) -> dict[str, list[float]]:
    """How far the rollout's log-probs are from the training forward's, and what TIS makes of it."""
    diffs = torch.cat([train_old[g].cpu() - torch.tensor(s.old_logprobs, dtype=torch.float32)
                       for g, same in enumerate(sets) for s in same])
    weights = torch.exp(diffs)
    return {"logprob_mismatch": [float(diffs.abs().mean())], "logprob_mismatch_max": [float(diffs.abs().max())],
            "tis_weight_mean": [float(weights.clamp(max=cap).mean())],
            "tis_clipped_fraction": [float((weights > cap).float().mean())]}


def identical_sequences(sequences: Sequence[TrainSequence]) -> list[list[int]]:
    """Indices of ``sequences`` grouped by equal (prompt, response, temperature, masks), in order of first
    appearance.

    Rollouts of one group often reach the same state and answer it the same way (every copy starts from the
    same observation); such rows need one forward/backward between them, each keeping its own advantage.
    """
    sets: dict[tuple, list[int]] = {}
    for i, s in enumerate(sequences):
        masks = tuple(map(tuple, s.allowed)) if s.allowed is not None else None
        sets.setdefault((tuple(s.prompt_ids), tuple(s.response_ids), s.temperature, masks), []).append(i)
    return list(sets.values())


def _accumulate_and_step(policy, optimizer, batch: list[list[TrainSequence]], metrics: dict[str, list[float]], *,
                         micro_batch_size: int, aggregation: str, loss_options: dict, reference,
                         value_head: ValueHead | None, value_coef: float, max_grad_norm: float,
                         totals: tuple[int, int] | None = None, finish=None,
                         packed: bool = False, forwarded: dict[str, int] | None = None,
                         train_old: list[torch.Tensor] | None = None, tis_cap: float | None = None) -> None:
    """One optimizer step on ``batch`` (sets of identical sequences), accumulated over micro-batches of
    ``micro_batch_size`` distinct sequences; the loss still counts every row with its own advantage.

    ``totals``: the (rows, tokens) the shares are taken of (default: ``batch``'s own); ``finish``: called after
    the backward passes, before clipping (a distributed update sums the gradients there).
    ``packed``: the sets ordered by prompt and each micro-batch scored packed (one temperature per
    micro-batch). ``train_old`` (one tensor per set): the training forward's log-probs before the update, the
    PPO ratio's reference, with each token's policy-gradient term weighted by
    ``min(exp(train_old - rollout logprob), tis_cap)`` (TIS).
    """
    device = policy.device
    model = policy.model
    rows_in_batch = sum(len(same) for same in batch)
    total_tokens = sum(len(same[0].response_ids) * len(same) for same in batch)
    if totals is not None:
        rows_in_batch, total_tokens = totals
    chunks: list[list[int]] = []
    if packed:
        order = _by_prompt(batch, lambda same: same[0])
        for start in range(0, len(order), micro_batch_size):
            part = order[start:start + micro_batch_size]
            for temperature in sorted({batch[g][0].temperature for g in part}):
                chunks.append([g for g in part if batch[g][0].temperature == temperature])
    else:
        chunks = [list(range(start, min(start + micro_batch_size, len(batch))))
                  for start in range(0, len(batch), micro_batch_size)]
    optimizer.zero_grad(set_to_none=True)
    for positions in chunks:
        chunk = [batch[g] for g in positions]
        rows = [s for same in chunk for s in same]
        expand = torch.tensor([k for k, same in enumerate(chunk) for _ in same], device=device)
        # Every micro-batch's share of the batch, so accumulated gradients equal the full-batch gradient.
        share = (sum(len(s.response_ids) for s in rows) / total_tokens if aggregation == "token-mean"
                 else len(rows) / rows_in_batch)
        prompts = [same[0].prompt_ids for same in chunk]
        responses = [same[0].response_ids for same in chunk]
        temperature = chunk[0][0].temperature
        allowed = [same[0].allowed for same in chunk]
        logps, entropies, hidden = _score(policy, prompts, responses, temperature, packed=packed,
                                          return_entropy=True, return_hidden=packed and value_head is not None,
                                          forwarded=forwarded, allowed=allowed)
        width = max(len(r) for r in responses)
        logprobs = _stack_padded(logps, width)[expand]
        entropy = _stack_padded(entropies, width)[expand]
        old, mask = _padded([s.old_logprobs for s in rows], device)
        advantages = torch.tensor([s.advantage for s in rows], dtype=torch.float32, device=device)
        if train_old is not None:
            # TIS: the ratio against the training forward's old log-probs, each token's policy-gradient term
            # weighted by the truncated importance weight (a per-token advantage scaled by w >= 0 scales the
            # clipped term by w: max(-wA r, -wA clip(r)) = w max(-A r, -A clip(r))).
            train = _stack_padded([train_old[g].to(device) for g in positions], width)[expand]
            weights = torch.exp(train - old).clamp(max=tis_cap) * mask
            advantages = advantages[:, None] * weights
            old = train
        ref_logprobs = None
        if reference is not None and loss_options["kl_coef"] > 0:
            with torch.no_grad():
                ref_logps, _, _ = _score(reference, prompts, responses, temperature, packed=packed, allowed=allowed)
                ref_logprobs = _stack_padded(ref_logps, width)[expand]
        out = clipped_policy_loss(logprobs, old, advantages, mask, ref_logprobs=ref_logprobs, entropy=entropy,
                                  **loss_options)
        loss = out.loss * share
        if value_head is not None:
            values = (value_head.from_hidden(torch.stack(hidden)) if hidden
                      else value_head(model, prompts, policy.tokenizer.pad_token_id))[expand]
            targets = torch.tensor([s.value_target for s in rows], dtype=torch.float32, device=device)
            old_values = torch.tensor([s.old_value for s in rows], dtype=torch.float32, device=device)
            v_loss = value_loss(values, old_values, targets)
            # The value loss is the mean over the mini-batch's rows, whatever its split into micro-batches.
            loss = loss + value_coef * v_loss * (len(rows) / rows_in_batch)
            metrics["value_loss"].append(v_loss.item())
        loss.backward()
        for key in ("loss", "pg_loss", "kl", "entropy", "clip_fraction", "approx_kl"):
            metrics[key].append(getattr(out, key).item())
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if finish is not None:
        finish(policy, parameters, micro_batch_size)
    metrics["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)))
    optimizer.step()


def warm_up_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float, warmup_steps: int) -> float:
    """Set the learning rate of the optimizer's next step to ``learning_rate * min(1, (k + 1) / warmup_steps)``,
    ``k`` the steps it has taken (Adam's own count, so a resumed run continues the ramp); returns it. A fresh
    Adam's first step moves every weight by about the learning rate whatever the gradient's size."""
    taken = max((float(state["step"]) for state in optimizer.state.values() if "step" in state), default=0.0)
    rate = learning_rate * min(1.0, (taken + 1) / max(warmup_steps, 1))
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate


def behaviour_cloning(
    policy,
    demonstrations: Sequence[tuple[list[int], list[int]] | tuple[list[int], list[int], list[list[int]] | None]],
    *,
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    progress=None,
    sharding: Any = None,
) -> list[float]:
    """Supervised fine-tuning on (prompt ids, response ids) pairs: minimise the response tokens' NLL.

    A demonstration may carry a third element, the constrained-decoding masks of its response (the allowed
    tokens at each position): its NLL is then that of the constrained distribution the agent samples from.

    Returns the loss of every step. ``progress`` (optional) is called with (step, loss). ``sharding``
    (data-parallel ranks): ``demonstrations`` are this rank's share of the global list; every step draws the
    same picks from the global list, each rank backpropagates its own, and the gradients are summed.
    """
    shards = sharding.demonstrations(demonstrations) if sharding is not None else None
    count = len(demonstrations) if shards is None else shards.count
    if not count:
        raise ValueError("behaviour cloning needs at least one demonstration")
    rng = random.Random(seed)
    parameters = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / steps))
    policy.model.train()
    packed = not _checkpointing(policy.model) and not (sharding is not None and sharding.dist.fsdp)
    losses = []
    for step in range(steps):
        picks = [rng.randrange(count) for _ in range(batch_size)]
        batch = [demonstrations[i] for i in picks] if shards is None else shards.local(picks, demonstrations)
        optimizer.zero_grad(set_to_none=True)
        value = 0.0
        if batch:
            masks = [d[2] if len(d) > 2 else None for d in batch]
            # Packed: the batch's distinct prompts forwarded once, logits only where a response token is
            # predicted (the same log-probs and gradients as the plain forward).
            logps, _, _ = _score(policy, [d[0] for d in batch], [d[1] for d in batch], 1.0, packed=packed,
                                 allowed=masks)
            tokens = sum(len(lp) for lp in logps) if shards is None else shards.tokens(picks)
            loss = -torch.cat(logps).sum() / max(tokens, 1)
            loss.backward()
            value = loss.item()
        if shards is not None:
            value = shards.finish(policy, parameters, picks, value)
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(value)
        if progress is not None:
            progress(step, losses[-1])
    policy.model.eval()
    return losses
