"""Data-parallel training over ``torch.distributed``: what each rank plays, and how the update stays exact.

``hiergym train`` runs unchanged under ``torchrun --nproc_per_node N`` (or any launcher that sets torchrun's
environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without it,
:func:`setup` returns a world of one and every method here is the identity.

- **Rollouts**: rank ``r`` plays a contiguous shard of the B group slots (``shard``); a group is never split,
  so every group statistic of every estimator is computed exactly, on the rank that holds the group. Its
  vector env draws the tasks of its global slots (``make_group_vec(first_slot=...)``).
- **Update**: the ranks' sequences, in rank order, are the global batch in the order one process would see
  it (rows are sorted by trajectory, trajectories numbered in slot order). :class:`UpdateSharding` gathers a
  digest and the length of every sequence, so every rank knows the *global* sets of identical rows, shuffles
  them with the same generator as one process (``policy_update``'s ``rng``: the same seed and the same calls on
  every rank), splits them into the same mini-batches, and scales each micro-batch by the mini-batch's
  *global* token (or row) count. Each rank backpropagates its own rows of each mini-batch; the gradients are
  summed over the ranks (:meth:`Distributed.reduce_gradients`) before clipping and the optimizer step, so the
  step is the one a single process takes on the whole batch (to float rounding).
- **Evaluation** and **behaviour cloning** shard their episodes the same way (contiguous ranges of episode
  ids); evaluation results are gathered on every rank (the summary is the single-process one) and the
  transcripts on rank 0, which alone writes files.

Gradients are summed by hand after the backward passes, not by ``DistributedDataParallel``: the ranks hold
different numbers of micro-batches per mini-batch (a rank may hold none of a mini-batch's rows), which DDP's
per-backward hooks cannot express without dummy passes, and DDP would wrap ``policy.model`` (its
``generate``, ``save_pretrained`` and the value head's hidden-state forward would all need ``.module``). One
bucketed all-reduce per optimizer step is what DDP would do with ``no_sync`` on all but the last micro-batch.

``fsdp=true`` shards the parameters, gradients and optimizer state with FSDP2's ``fully_shard`` (each decoder
layer, then the whole model) for models that do not fit one device; see :meth:`Distributed.shard_model`.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hashlib
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiergym.envs.core import stable_seed

#: Bytes per gradient bucket of the all-reduce.
BUCKET_BYTES = 64 * 2**20


def launched_world_size() -> int:
    """``WORLD_SIZE`` as a launcher (torchrun, ``accelerate launch``) set it; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def setup(timeout_s: float = 600.0, fsdp: bool = False) -> Distributed:
    """This process's place in the job: joins the process group of a torchrun launch (``nccl`` on CUDA, else
    ``gloo``, with ``timeout_s`` on every collective), or a world of one."""
    import torch.distributed as dist

    if not dist.is_available() or (launched_world_size() == 1 and not dist.is_initialized()):
        if fsdp:
            print("fsdp=true has no effect in a single process (launch with torchrun --nproc_per_node N)")
        return Distributed()
    timeout = timedelta(seconds=float(timeout_s))
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # "cuda" and "auto" then mean this rank's own GPU
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
        # A process group still alive at interpreter exit can abort the process from gloo's threads
        # ("terminate called without an active exception"): tear it down first, once every rank is done.
        atexit.register(_close_process_group)
    backend = dist.get_backend()
    # Python objects (keys, results, transcripts, metrics) always travel over gloo, on CPU.
    objects = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")), objects=objects, fsdp=fsdp)


@dataclasses.dataclass
class Distributed:
    """Rank, world size and the collectives the trainer uses; a world of one does no communication."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    objects: Any = None
    fsdp: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------------------- sharding
    def bounds(self, count: int, rank: int | None = None) -> tuple[int, int]:
        """``[start, stop)`` of ``rank``'s contiguous share of ``count`` items (the first ``count % N`` ranks
        hold one more)."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(int(count), self.world_size)
        start = rank * base + min(rank, extra)
        return start, start + base + (1 if rank < extra else 0)

    def shard(self, items: Sequence[Any]) -> list[Any]:
        start, stop = self.bounds(len(items))
        return list(items[start:stop])

    def rank_seed(self, seed: int) -> int:
        """The sampling seed of this rank's agent: ``seed`` on rank 0, a distinct stream on every other rank
        (the same seed everywhere would draw the same random numbers for every rank's copies)."""
        return int(seed) if self.rank == 0 else stable_seed("hiergym.rank", int(seed), self.rank) % (2**31)

    # ------------------------------------------------------------------------------------- objects
    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.objects)
        return out

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0, group=self.objects)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(tensor, group=self.objects)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=self.objects)

    # ------------------------------------------------------------------------------------- tensors
    def broadcast_parameters(self, module: torch.nn.Module | None) -> None:
        """Rank 0's parameters and buffers on every rank (the ranks start from identical weights)."""
        if not self.enabled or module is None:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def reduce_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks, in buckets; a gradient that is None on every rank
        stays None (the optimizer then skips the parameter, as one process would)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        parameters = [p for p in parameters if not _is_dtensor(p)]  # FSDP reduces its own
        if not parameters:
            return
        device = parameters[0].device
        present = torch.tensor([0.0 if p.grad is None else 1.0 for p in parameters], device=device)
        dist.all_reduce(present)
        for p, seen in zip(parameters, present.tolist(), strict=True):
            if seen and p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p, seen in zip(parameters, present.tolist(), strict=True) if seen]
        for bucket in _buckets(grads, BUCKET_BYTES):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def update_sharding(self) -> UpdateSharding | None:
        """What ``policy_update`` and ``behaviour_cloning`` take as ``sharding`` (None for a world of one)."""
        return UpdateSharding(self) if self.enabled else None

    # ------------------------------------------------------------------------------------- metrics
    def iteration_metrics(self, metrics: dict[str, Any], rollout: Any, advantages: np.ndarray,
                          invalid: np.ndarray) -> dict[str, Any]:
        """One RL iteration's metrics over every rank's rollouts (identical on all ranks)."""
        if not self.enabled:
            return metrics
        local = {"metrics": metrics, "won": [float(e["won"]) for e in rollout.episodes],
                 "returns": [float(e["return"]) for e in rollout.episodes],
                 "advantages": np.asarray(advantages, dtype=np.float64), "invalid": np.asarray(invalid, bool)}
        parts = self.all_gather(local)
        won = [w for p in parts for w in p["won"]]
        returns = [r for p in parts for r in p["returns"]]
        adv = np.concatenate([p["advantages"] for p in parts])
        inv = np.concatenate([p["invalid"] for p in parts])
        out = dict(metrics)
        out.update(train_success=float(np.mean(won)) if won else 0.0,
                   train_return=float(np.mean(returns)) if returns else 0.0,
                   invalid_rate=float(inv.mean()) if len(inv) else 0.0,
                   advantage_std=float(adv.std()) if len(adv) else 0.0, world_size=self.world_size)
        rows = [p["metrics"] for p in parts]
        for key in metrics:
            values = [r.get(key) for r in rows]
            if key in ("rows", "generated_tokens", "prompt_tokens") or key in _SUMMED_UPDATE_METRICS:
                out[key] = sum(v for v in values if isinstance(v, int | float))
            elif key.endswith("_seconds"):
                out[key] = max(values)  # the slowest rank sets the pace
            elif key.startswith("update_") and all(isinstance(v, int | float) for v in values):
                out[key] = float(np.mean(values))
        return out

    def center(self, sums: Sequence[float], counts: Sequence[float]) -> list[float]:
        """Global means from per-rank sums and counts (for ``center_advantages``)."""
        totals = self.sum([*sums, *counts])
        n = len(sums)
        return [s / c if c else 0.0 for s, c in zip(totals[:n], totals[n:], strict=True)]

    # ------------------------------------------------------------------------------------- evaluation
    def gather_evaluation(self, results: list[Any], run_dir: Path, local_dir: Path | None) -> list[Any]:
        """Every rank's evaluation results, sorted by episode, on every rank; the transcripts that ranks other
        than 0 wrote to ``local_dir`` land in rank 0's ``run_dir``."""
        if not self.enabled:
            return results
        files: dict[str, str] = {}
        if local_dir is not None and not self.is_main:
            for path in sorted(Path(local_dir).rglob("*")):
                if path.is_file():
                    files[str(path.relative_to(local_dir))] = path.read_text()
            shutil.rmtree(local_dir, ignore_errors=True)
        gathered = self.gather(files)
        if self.is_main:
            for part in gathered or []:
                for name, text in part.items():
                    target = Path(run_dir) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text)
        everything = [r for part in self.all_gather(results) for r in part]
        return sorted(everything, key=lambda r: r.episode)

    def local_eval_dir(self, run_dir: Path) -> Path:
        """Where this rank's evaluation transcripts go first: ``run_dir`` on rank 0, a temporary folder on the
        others (sent to rank 0 afterwards, so that no shared filesystem is needed)."""
        if self.is_main:
            return Path(run_dir)
        return Path(tempfile.mkdtemp(prefix=f"hiergym-eval-rank{self.rank}-"))

    # ------------------------------------------------------------------------------------- FSDP
    def shard_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: ``fully_shard`` every decoder layer, then the model (parameters become DTensors sharded over
        the ranks). Gradients are summed over the ranks, not averaged, since the loss is already normalised
        over the global batch."""
        from torch.distributed.fsdp import fully_shard

        layers = _decoder_layers(model)
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
        for module in [*layers, model]:
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)
        return model

    def generation(self, model: torch.nn.Module):
        """A context for rollouts and evaluation under FSDP: the whole model is gathered once and stays
        gathered through every forward, so that ranks generating different numbers of tokens issue no
        collectives (a sharded forward would all-gather each layer and wait for the other ranks)."""
        return _Unsharded(model if self.fsdp and self.enabled else None)

    def full_policy(self, policy: Any) -> Any:
        """The policy with a plain (unsharded, CPU) copy of the model on rank 0 under FSDP, for
        ``policy.save``; the policy itself otherwise. Every rank must call it (it gathers)."""
        if not (self.fsdp and self.enabled):
            return policy
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        with torch.device("cpu"):
            plain = type(policy.model)(policy.model.config)
        plain.load_state_dict(state)
        saved = copy.copy(policy)
        saved.model = plain
        return saved

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state dict, whole (gathered under FSDP: every rank must call it)."""
        if not (self.fsdp and self.enabled):
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        # Saved as a plain optimizer's (parameters by index, not by name): resumable with or without FSDP.
        index = {name: i for i, name in enumerate(_trained_names(model))}
        return {"state": {index[name]: value for name, value in state["state"].items()},
                "param_groups": [{**g, "params": [index[name] for name in g["params"]]}
                                 for g in state["param_groups"]]}

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        if not (self.fsdp and self.enabled):
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = _trained_names(model)
        try:
            by_name = {"state": {names[i]: value for i, value in state["state"].items()},
                       "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                                        for g in state["param_groups"]]}
        except (IndexError, KeyError, TypeError):
            raise ValueError("the optimizer state does not match the model") from None
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


_SUMMED_UPDATE_METRICS = ("update_sequences", "update_unique_sequences", "update_tokens", "update_forward_tokens")


class _Unsharded:
    def __init__(self, model: torch.nn.Module | None) -> None:
        self.model = model

    def __enter__(self) -> None:
        if self.model is None:
            return
        for module in _fsdp_modules(self.model):
            module.set_reshard_after_forward(False, recurse=False)
        for module in _fsdp_modules(self.model):
            module.unshard()

    def __exit__(self, *exc: object) -> None:
        if self.model is None:
            return
        for module in _fsdp_modules(self.model):
            module.reshard()
            module.set_reshard_after_forward(True, recurse=False)


def _trained_names(model: torch.nn.Module) -> list[str]:
    """Names of the trained parameters, in the order the trainer hands them to its optimizer."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of a Hugging Face causal LM (``model.model.layers`` and kin); [] if none found."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        module: Any = model
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return list(module)
    return []


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor" or type(getattr(tensor, "data", None)).__name__ == "DTensor"


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = []
    size = limit
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if size + nbytes > limit or (buckets and buckets[-1][0].dtype != t.dtype):
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += nbytes
    return buckets


def sequence_digest(prompt_ids: Sequence[int], response_ids: Sequence[int], temperature: float,
                    allowed: Sequence[Sequence[int]] | None = None) -> bytes:
    """A 16-byte digest of (prompt, response, temperature, constrained-decoding masks): equal rows, equal
    digests, on every rank."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(prompt_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(response_ids, dtype=np.int64).tobytes())
    h.update(struct.pack("<d", float(temperature)))
    for ids in allowed or ():
        h.update(b";" + np.asarray(ids, dtype=np.int64).tobytes())
    return h.digest()


class UpdateSharding:
    """The global view of a distributed update (see the module docstring); passed to ``policy_update`` and
    ``behaviour_cloning`` as ``sharding``."""

    def __init__(self, dist: Distributed) -> None:
        self.dist = dist

    def global_sets(self, usable: Sequence[Any]) -> GlobalSets:
        """The sets of identical sequences over every rank's ``usable`` sequences (a collective)."""
        keys = [(sequence_digest(s.prompt_ids, s.response_ids, s.temperature, s.allowed), len(s.response_ids))
                for s in usable]
        return GlobalSets(self.dist, self.dist.all_gather(keys))

    def demonstrations(self, pairs: Sequence[tuple]) -> GlobalDemonstrations:
        """The global list of behaviour-cloning pairs (a collective)."""
        return GlobalDemonstrations(self.dist, self.dist.all_gather([len(pair[1]) for pair in pairs]))


class GlobalSets:
    """Every rank's sequences, concatenated in rank order, grouped into identical sets in order of first
    appearance: exactly ``identical_sequences`` of the whole batch in one process."""

    def __init__(self, dist: Distributed, keys_per_rank: list[list[tuple[bytes, int]]]) -> None:
        self.dist = dist
        offsets = np.cumsum([0, *[len(k) for k in keys_per_rank]])
        self.offset, self.local_count = int(offsets[dist.rank]), len(keys_per_rank[dist.rank])
        owner = np.repeat(np.arange(dist.world_size), [len(k) for k in keys_per_rank])
        index: dict[bytes, int] = {}
        members: list[list[int]] = []
        lengths: list[int] = []
        for i, (digest, length) in enumerate(key for keys in keys_per_rank for key in keys):
            g = index.setdefault(digest, len(members))
            if g == len(members):
                members.append([])
                lengths.append(length)
            members[g].append(i)
        self.members, self.lengths = members, lengths
        self.owners = [owner[m] for m in members]

    @property
    def count(self) -> int:
        return len(self.members)

    def mini_batch(self, usable: Sequence[Any], mini: Sequence[int]) -> tuple[list[list[Any]], tuple[int, int]]:
        """This rank's rows of the global sets ``mini`` (as local identical sets), and the mini-batch's global
        (row count, token count) that every micro-batch's share is taken of."""
        batch: list[list[Any]] = []
        rows = tokens = 0
        lo, hi = self.offset, self.offset + self.local_count
        sets_per_rank = np.zeros(self.dist.world_size, dtype=np.int64)
        for g in mini:
            members = self.members[int(g)]
            rows += len(members)
            tokens += len(members) * self.lengths[int(g)]
            sets_per_rank[np.unique(self.owners[int(g)])] += 1
            mine = [usable[i - lo] for i in members if lo <= i < hi]
            if mine:
                batch.append(mine)
        self._sets, self._most_sets = len(batch), int(sets_per_rank.max())
        return batch, (rows, tokens)

    def finish(self, policy: Any, parameters: Sequence[torch.nn.Parameter], micro_batch_size: int) -> None:
        """After this rank's backward passes of a mini-batch: sum the gradients over the ranks. Under FSDP,
        whose every forward and backward is a collective, a rank with fewer micro-batches than another first
        runs as many empty ones (a forward and a zero backward)."""
        if self.dist.fsdp:
            missing = math.ceil(self._most_sets / micro_batch_size) - math.ceil(self._sets / micro_batch_size)
            for _ in range(missing):
                _empty_pass(policy)
        self.dist.reduce_gradients(parameters)


class GlobalDemonstrations:
    """Every rank's behaviour-cloning pairs, concatenated in rank order (the order one process has them)."""

    def __init__(self, dist: Distributed, lengths_per_rank: list[list[int]]) -> None:
        self.dist = dist
        self.lengths = [n for part in lengths_per_rank for n in part]
        offsets = np.cumsum([0, *[len(p) for p in lengths_per_rank]])
        self.offset, self.local_count = int(offsets[dist.rank]), len(lengths_per_rank[dist.rank])

    @property
    def count(self) -> int:
        return len(self.lengths)

    def local(self, picks: Sequence[int], pairs: Sequence[Any]) -> list[Any]:
        """This rank's pairs among the global ``picks`` (with repetitions, in pick order)."""
        lo, hi = self.offset, self.offset + self.local_count
        return [pairs[i - lo] for i in picks if lo <= i < hi]

    def tokens(self, picks: Sequence[int]) -> int:
        return sum(self.lengths[i] for i in picks)

    def finish(self, policy: Any, parameters: Sequence[torch.nn.Parameter], picks: Sequence[int], loss: float
               ) -> float:
        """Sum the gradients over the ranks; returns the global loss. Under FSDP a rank that held none of the
        step's picks runs an empty pass first (every rank must forward once)."""
        if self.dist.fsdp and not self.local(picks, range(self.local_count)):
            _empty_pass(policy)
        self.dist.reduce_gradients(parameters)
        return self.dist.sum([loss])[0]


def _empty_pass(policy: Any) -> None:
    """A forward on one padding token and a zero backward: the FSDP collectives of a micro-batch, no gradient."""
    ids = torch.tensor([[policy.tokenizer.pad_token_id]], device=policy.device)
    (policy.model(input_ids=ids).logits.sum() * 0.0).backward()


def check_world(num_tasks: int, dist: Distributed) -> None:
    if dist.enabled and num_tasks < dist.world_size:
        raise ValueError(f"bad training config: num_tasks={num_tasks} groups cannot be shared by {dist.world_size} "
                         f"ranks (a group is never split); use num_tasks >= {dist.world_size}")


__all__ = ["Distributed", "GlobalDemonstrations", "GlobalSets", "UpdateSharding", "launched_rank",
           "launched_world_size", "sequence_digest", "setup"]
