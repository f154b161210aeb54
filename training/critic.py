"""Turn critics: ArCHer's off-policy utterance-level Q/V critic and Turn-PPO's turn-level value critic.

Both are a *separate model* (:class:`SequenceScorer`): a causal transformer over the policy's own token ids
with scalar heads read at chosen positions of a turn's tokens. Its transformer starts as a copy of the policy's
(``critic_init="policy"``, :func:`policy_trunk`: the features behaviour cloning taught, as verl starts its
critic from the actor) or as a new small Llama (``"fresh"``), and is trained apart from the policy on purpose:

- ArCHer's critic is trained off-policy from a replay buffer with a Polyak-averaged *target network*; heads on
  the policy's own hidden states would not give a fixed target, because the features under them move with
  every policy update, and turns replayed from old iterations would be scored by today's features;
- the critic's gradient never reaches the policy, so the actor and the critic each have their own learning
  rate and number of steps (Turn-PPO: the critic must learn faster than the actor);
- it reads token ids, not the policy's hidden states, so it works for any policy the trainer can build. The
  price of ``"policy"``: a second copy of the policy's transformer (``"fresh"`` is small, but starts without
  any language knowledge).

One causal forward of ``prompt + response`` gives both ArCHer values: V(s) read at the prompt's last token
(the causal mask keeps the response out of it) and Q(s, a) at the response's last token, each as twin heads
(ArCHer's double critic: the actor and the V targets read the smaller twin).

- :class:`ArcherCritic`: every iteration, the batch's turns go into a :class:`~hiergym.training.replay.TurnReplay`;
  ``critic_updates`` minibatches drawn from it take a TD step each (:func:`archer_td_targets`), the target
  network follows by Polyak averaging, then the online critic scores the batch: ``batch.q_value`` and
  ``batch.value``, from which the ``archer`` estimator takes A = Q - V.
- :class:`TurnValueCritic`: V(s) of every turn before the estimator (``batch.value``), then ``critic_updates``
  regression steps on the turn-level lambda-returns ``A + V`` of the batch (on-policy, as PPO's critic).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hiergym.training.advantages import ArcherOptions, HiPEROptions, TurnPPOOptions, turn_gae, value_targets
from hiergym.training.replay import Turn, TurnReplay, turns_from_batch
from hiergym.training.trajectory import StepBatch

#: Longest token row a critic reads; longer rows lose their start (the oldest history).
MAX_CRITIC_TOKENS = 1024


def _attention_heads(hidden_size: int) -> int:
    return next(h for h in (4, 2, 1) if hidden_size % h == 0)


class SequenceScorer(torch.nn.Module):
    """A small causal transformer (Llama blocks) over token ids, with named scalar heads.

    ``scores(rows, reads)`` runs each token row once (right-padded) and returns, for each ``(row index,
    position, head)`` in ``reads``, that head applied to the last layer's hidden state at that position.
    """

    def __init__(self, vocab_size: int, pad_id: int, heads: Sequence[str], *, hidden_size: int = 64,
                 layers: int = 2, seed: int = 0, max_tokens: int = MAX_CRITIC_TOKENS,
                 trunk: torch.nn.Module | None = None):
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if trunk is None:
                config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                                     intermediate_size=3 * hidden_size, num_hidden_layers=layers,
                                     num_attention_heads=_attention_heads(hidden_size),
                                     num_key_value_heads=_attention_heads(hidden_size),
                                     max_position_embeddings=max_tokens, pad_token_id=pad_id, attention_bias=False)
                trunk = LlamaModel(config)
            else:
                hidden_size = int(trunk.config.hidden_size)
                max_tokens = min(max_tokens, int(getattr(trunk.config, "max_position_embeddings", max_tokens)))
            self.trunk = trunk
            self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden_size, 1) for name in heads})
        self.pad_id = pad_id
        self.max_tokens = max_tokens

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def scores(self, rows: Sequence[Sequence[int]], reads: Sequence[tuple[int, int, str]]) -> torch.Tensor:
        device = self.device
        cut = [max(0, len(r) - self.max_tokens) for r in rows]
        kept = [np.asarray(r, np.int64)[c:] for r, c in zip(rows, cut, strict=True)]
        width = max((len(r) for r in kept), default=1) or 1
        ids = np.full((len(kept), width), self.pad_id, np.int64)
        mask = np.zeros((len(kept), width), np.int64)
        for i, r in enumerate(kept):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        hidden = self.trunk(input_ids=torch.from_numpy(ids).to(device),
                            attention_mask=torch.from_numpy(mask).to(device)).last_hidden_state.float()
        out = []
        for name in dict.fromkeys(head for _, _, head in reads):
            picked = [(k, row, max(0, pos - cut[row])) for k, (row, pos, head) in enumerate(reads) if head == name]
            index = torch.tensor([k for k, _, _ in picked], device=device)
            states = hidden[torch.tensor([r for _, r, _ in picked], device=device),
                            torch.tensor([p for _, _, p in picked], device=device)]
            out.append((index, self.heads[name](states).squeeze(-1)))
        result = torch.zeros(len(reads), device=device)
        for index, values in out:
            result = result.index_put((index,), values)
        return result


def policy_trunk(policy) -> torch.nn.Module:
    """A copy of the policy's transformer without its LM head (the critic's start with ``*_init="policy"``): the
    features behaviour cloning taught, then trained apart from the policy."""
    model = policy.model
    if hasattr(model, "get_base_model"):  # a peft (LoRA) model
        model = model.get_base_model()
    trunk = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(trunk, torch.nn.Module):
        raise ValueError(f"cannot find the transformer under {type(model).__name__} to start a critic from; use a "
                         "fresh critic (critic_init='fresh' / spa_init='fresh')")
    trunk = copy.deepcopy(trunk).train()
    for p in trunk.parameters():
        p.requires_grad_(True)
    return trunk


def polyak_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, parameter by parameter."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


def archer_td_targets(reward: np.ndarray, discount: np.ndarray, terminal: np.ndarray, next_value: np.ndarray,
                      target_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArCHer's TD targets of a minibatch of turns, from the *target* critic's estimates.

    Q_i(s, a) <- r + discount * (1 - terminal) * V_target_i(s')    (discount = gamma ** steps to the next turn)
    V_i(s)    <- min_j Q_target_j(s, a)                            (a: the replayed turn's own response)

    ``next_value`` and ``target_q`` are ``[turns]`` (one critic) or ``[turns, twins]`` (ArCHer's double critic:
    each Q twin bootstraps on its own V twin, both V twins on the smaller target Q).
    """
    next_value = np.asarray(next_value, np.float64)
    bootstrap = np.where(np.asarray(terminal), 0.0, np.asarray(discount, np.float64))
    if next_value.ndim == 2:
        bootstrap = bootstrap[:, None]
    q_target = np.asarray(reward, np.float64).reshape(-1, *([1] * (next_value.ndim - 1))) + bootstrap * next_value
    target_q = np.asarray(target_q, np.float64)
    return q_target, target_q.min(axis=1) if target_q.ndim == 2 else target_q


def unique_rows(rows: Sequence[tuple[tuple[int, ...], ...]]) -> tuple[list[tuple], np.ndarray]:
    """Distinct rows and, for every row, the index of its distinct copy (copies of a group often repeat)."""
    seen: dict[tuple, int] = {}
    index = np.array([seen.setdefault(r, len(seen)) for r in rows], np.int64)
    return list(seen), index


class _TurnScorer:
    """Q and V of turns under a :class:`SequenceScorer` with heads ``q1..qk`` and ``v1..vk``, in chunks."""

    def __init__(self, chunk: int = 64, twins: int = 2):
        self.chunk = chunk
        self.twins = twins

    def heads(self) -> tuple[str, ...]:
        return tuple(f"{kind}{k + 1}" for kind in ("q", "v") for k in range(self.twins))

    def q_and_v(self, net: SequenceScorer, prompts: Sequence[Sequence[int]],
                responses: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[turns, twins]`` Q(s, a) read at the response's last token and V(s) at the prompt's, one forward."""
        rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
        reads = [(i, len(p) - 1, f"v{k + 1}") for k in range(self.twins) for i, p in enumerate(prompts)]
        reads += [(i, len(row) - 1, f"q{k + 1}") for k in range(self.twins) for i, row in enumerate(rows)]
        values = net.scores(rows, reads).reshape(2, self.twins, len(rows))
        return values[1].T, values[0].T

    def values(self, net: SequenceScorer, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[turns, twins]`` V(s) at each prompt's last token."""
        reads = [(i, len(p) - 1, f"v{k + 1}") for k in range(self.twins) for i, p in enumerate(prompts)]
        return net.scores([list(p) for p in prompts], reads).reshape(self.twins, len(prompts)).T


class ArcherCritic:
    """ArCHer's utterance-level critic: Q(s, a) and V(s) over whole turns, TD-trained from a replay buffer with a
    Polyak-averaged target network (see the module docstring and ``docs/training.md``)."""

    def __init__(self, options: ArcherOptions, *, vocab_size: int, pad_id: int, device: torch.device, seed: int = 0,
                 trunk: torch.nn.Module | None = None):
        self.options = options
        self._scorer = _TurnScorer(chunk=options.critic_batch_size, twins=2)
        self.online = SequenceScorer(vocab_size, pad_id, self._scorer.heads(), hidden_size=options.critic_hidden_size,
                                     layers=options.critic_layers, seed=seed, trunk=trunk).to(device)
        self.target = copy.deepcopy(self.online).eval()
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.online.parameters(), lr=options.critic_learning_rate,
                                           weight_decay=0.0)
        self.replay = TurnReplay(options.buffer_size, seed=seed)
        self.iterations = 0

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def td_targets(self, turns: Sequence[Turn]) -> tuple[np.ndarray, np.ndarray]:
        """The TD targets of ``turns`` from the target network (:func:`archer_td_targets`)."""
        linked = [k for k, t in enumerate(turns) if not t.terminal]
        next_value = np.zeros((len(turns), self._scorer.twins))
        if linked:
            next_value[linked] = self._scorer.values(self.target, [turns[k].next_prompt for k in linked]).cpu().numpy()
        target_q, _ = self._scorer.q_and_v(self.target, [t.prompt for t in turns], [t.response for t in turns])
        return archer_td_targets(np.array([t.reward for t in turns]),
                                 np.array([self.options.gamma ** t.delta_steps for t in turns]),
                                 np.array([t.terminal for t in turns]), next_value, target_q.cpu().numpy())

    def td_step(self, turns: Sequence[Turn]) -> float:
        """One TD step of the online critic on ``turns``, then the Polyak step of the target network."""
        prompts = [t.prompt for t in turns]
        responses = [t.response for t in turns]
        q_target, v_target = self.td_targets(turns)
        self.online.train()
        q, v = self._scorer.q_and_v(self.online, prompts, responses)
        device = q.device
        v_target = np.repeat(v_target[:, None], self._scorer.twins, axis=1)
        loss = (0.5 * (q - torch.tensor(q_target, dtype=torch.float32, device=device)).pow(2).mean(0).sum()
                + 0.5 * (v - torch.tensor(v_target, dtype=torch.float32, device=device)).pow(2).mean(0).sum())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), 1.0)
        self.optimizer.step()
        self.online.eval()
        polyak_update(self.target, self.online, self.options.tau)
        return float(loss.item())

    def train(self, updates: int | None = None) -> list[float]:
        o = self.options
        return [self.td_step(self.replay.sample(o.critic_batch_size))
                for _ in range(o.critic_updates if updates is None else updates) if len(self.replay)]

    @torch.no_grad()
    def score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
              ) -> tuple[np.ndarray, np.ndarray]:
        """Online Q(s, a) = min_i Q_i and V(s) = min_i V_i of turns (ArCHer's actor reads the smaller twin;
        distinct turns scored once)."""
        distinct, index = unique_rows([(tuple(p), tuple(r)) for p, r in zip(prompts, responses, strict=True)])
        q_all, v_all = [], []
        for start in range(0, len(distinct), self._scorer.chunk):
            chunk = distinct[start:start + self._scorer.chunk]
            q, v = self._scorer.q_and_v(self.online, [p for p, _ in chunk], [r for _, r in chunk])
            q_all.append(q.min(dim=1).values.cpu().numpy())
            v_all.append(v.min(dim=1).values.cpu().numpy())
        q = np.concatenate(q_all) if q_all else np.zeros(0)
        v = np.concatenate(v_all) if v_all else np.zeros(0)
        return q[index].astype(np.float64), v[index].astype(np.float64)

    # ------------------------------------------------------------------ the trainer's hooks
    def before_advantages(self, batch: StepBatch) -> dict[str, float]:
        """Replay the batch's turns, take the TD steps, then fill ``batch.q_value`` / ``batch.value``."""
        self.replay.add(turns_from_batch(batch))
        losses = self.train()
        records = batch.records or []
        q, v = self.score([r.prompt_token_ids for r in records], [r.response_token_ids for r in records])
        if self.iterations < self.options.warmup_iterations:
            q = v.copy()  # the critic warms up: no policy signal yet
        batch.q_value, batch.value = q, v
        self.iterations += 1
        return {"critic_loss": float(np.mean(losses)) if losses else float("nan"), "critic_replay": len(self.replay),
                "critic_q_mean": float(q.mean()) if q.size else 0.0,
                "critic_advantage_std": float((q - v).std()) if q.size else 0.0}

    def after_advantages(self, batch: StepBatch, advantages: np.ndarray) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict(),
                "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.iterations = int(state["iterations"])


class TurnValueCritic:
    """Turn-PPO's critic (and ``hiper``'s with ``critic='separate'``): V(s) of every turn's prompt, regressed on
    the lambda-returns of the batch."""

    def __init__(self, options: TurnPPOOptions | HiPEROptions, *, vocab_size: int, pad_id: int, device: torch.device,
                 seed: int = 0, trunk: torch.nn.Module | None = None):
        self.options = options
        self._scorer = _TurnScorer(chunk=options.critic_batch_size, twins=1)
        self.net = SequenceScorer(vocab_size, pad_id, ("v1",), hidden_size=options.critic_hidden_size,
                                  layers=options.critic_layers, seed=seed, trunk=trunk).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=options.critic_learning_rate, weight_decay=0.0)
        self.rng = np.random.default_rng(seed)
        #: Batches the critic has been fitted on.
        self.iterations = 0

    @property
    def warmup_batch(self) -> bool:
        """Whether the batch fitted last was among the first ``critic_warmup_iterations`` (the trainer then
        updates no policy level on it)."""
        return 0 < self.iterations <= self.options.critic_warmup_iterations

    @torch.no_grad()
    def values(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        distinct, index = unique_rows([tuple(p) for p in prompts])
        out = [self._scorer.values(self.net, distinct[s:s + self._scorer.chunk])[:, 0].cpu().numpy()
               for s in range(0, len(distinct), self._scorer.chunk)]
        return (np.concatenate(out) if out else np.zeros(0))[index].astype(np.float64)

    def fit(self, prompts: Sequence[Sequence[int]], targets: np.ndarray, updates: int | None = None) -> list[float]:
        """``updates`` regression steps (MSE) on minibatches of (prompt, target) drawn without replacement."""
        o = self.options
        losses = []
        if not len(prompts):
            return losses
        self.net.train()
        for _ in range(o.critic_updates if updates is None else updates):
            rows = self.rng.choice(len(prompts), min(o.critic_batch_size, len(prompts)), replace=False)
            v = self._scorer.values(self.net, [prompts[i] for i in rows])[:, 0]
            target = torch.tensor(np.asarray(targets)[rows], dtype=torch.float32, device=v.device)
            loss = 0.5 * (v - target).pow(2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.optimizer.step()
            losses.append(float(loss.item()))
        self.net.eval()
        return losses

    def before_advantages(self, batch: StepBatch) -> dict[str, float]:
        batch.value = self.values([r.prompt_token_ids for r in batch.records or []])
        return {"critic_v_mean": float(batch.value.mean()) if len(batch) else 0.0}

    def after_advantages(self, batch: StepBatch, advantages: np.ndarray) -> dict[str, float]:
        """Regress V on the lambda-returns A + V: Turn-PPO's turn-level ones (recomputed unscaled, whatever
        ``normalize`` did), or the estimator's own advantages plus V (``hiper`` with ``form='value'``, whose
        advantages are raw GAE at both levels, the value head's targets)."""
        keep = [i for i, r in enumerate(batch.records or []) if r.prompt_token_ids]
        o = self.options
        if isinstance(o, TurnPPOOptions):
            targets = (turn_gae(batch, batch.value, o.gamma, o.lam) + batch.value)[keep]
        else:
            targets = value_targets(batch, advantages)[keep]
        losses = self.fit([batch.records[i].prompt_token_ids for i in keep], targets)
        self.iterations += 1
        return {"critic_loss": float(np.mean(losses)) if losses else float("nan"),
                "critic_warmup": float(self.warmup_batch)}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state, "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.iterations = int(state.get("iterations", 0))  # checkpoints from before the warm-up option
