"""Multi-agent training on the PettingZoo text games: self-play, frozen past selves, a league, scripted players.

    config = load_config("tictactoe-selfplay")
    summary = SelfPlayTrainer(config).run()

or ``hiergym train --preset tictactoe-selfplay`` (any config with ``game`` set runs this loop). One run:

1. **Behaviour cloning from a scripted player** (``sft_teacher``, e.g. perfect tic-tac-toe): ``sft_episodes``
   games of the teacher against ``sft_partners`` (cycled), played through the very LLM agent that will be
   trained (its backend answers every prompt with the teacher's move), so the model is cloned on the prompts
   it will see; only the teacher's seat is demonstrated. Skipped with ``sft_episodes=0``.
2. **Evaluation** against every opponent of ``eval_opponents`` (``eval_episodes`` games each, the learner in
   each seat half the time, game ``i`` with seed ``seed + i`` and task ``i`` of ``eval_split``), before and
   after RL; Kuhn poker (one hand) also gets its exact exploitability (:func:`kuhn_exploitability`).
3. **RL iterations**: ``num_tasks`` tasks x ``group_size`` same-seed copies per batch, played by the
   multi-agent driver (:func:`hiergym.multiagent_driver.play_games`). Task ``b``'s opponent is drawn from
   ``opponent_mix``: ``self`` (the learning policy in both seats: pure self-play, both seats' rows train it),
   ``frozen`` (the latest snapshot), ``league`` (a past snapshot, sampled by ``league_sampling``) or a scripted
   player (``random``, ``expert``, the game's names). Otherwise the learner sits in seat ``(batch + b) % 2``.
   Each seat's moves are one trajectory in the group of its task and seat (``group_id``), with ``role`` = the
   seat, so every estimator runs on the rows unchanged; the learner's rows (from both seats) are trained.
4. **Snapshots** of the policy every ``snapshot_every`` iterations (and one after cloning) in
   ``OUT/snapshots/iter_NNNNNN`` (each loadable as ``tiny:DIR``, e.g. by ``hiergym arena``); the list, and the
   league's per-snapshot results, are part of the checkpoint, so ``--resume`` continues with the same league.

League sampling (``league_sampling``): ``uniform`` draws each of the last ``league_size`` snapshots equally
often; ``prioritized`` (AlphaStar's prioritised fictitious self-play, ``f_hard``) draws snapshot ``i`` with
weight ``(1 - p_i) ** 2``, ``p_i = (score_i + 1) / (games_i + 2)`` the learner's smoothed score against it
(win 1, draw 1/2) in training so far: the past selves the learner still fails to beat are played most.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiergym.agents.base import EPISODE_INDEX, EPISODE_SEED, BatchedAgent, Decision
from hiergym.agents.demonstrator import ScriptedBackend
from hiergym.agents.parsing import parse_action
from hiergym.agents.prompts import format_action_response
from hiergym.envs.core import stable_seed
from hiergym.multiagent_driver import GameResult, play_games
from hiergym.stats import paired_mean_difference, paired_success_difference, wilson_interval
from hiergym.training.advantages import compute_advantages
from hiergym.training.config import LEARNER_OPPONENTS, TrainConfig
from hiergym.training.demonstrations import Demonstration
from hiergym.training.optimize import behaviour_cloning, policy_update
from hiergym.training.trainer import Trainer, _progress_bar, build_agent, saved_agent_settings
from hiergym.training.trajectory import StepBatch

SELF, FROZEN, LEAGUE = LEARNER_OPPONENTS
SEATS = ("player_0", "player_1")


# ------------------------------------------------------------------------------------------ scripted teacher
class ScriptedTeacher(BatchedAgent):
    """A scripted player's moves, written by an LLM agent: the agent builds every prompt with its own prompt
    and memory code and its backend answers with the player's move in the agent's output format, so the
    generations are behaviour-cloning pairs. One player per episode, seeded from the episode's seed; a
    privileged player (the household expert) is bound to its episode's game (``bind_game`` is called once per
    episode, in the order of the reset batch, by the multi-agent driver)."""

    def __init__(self, agent: Any, game: str, teacher: str):
        self.agent = agent
        self.backend = ScriptedBackend()
        agent.backend = self.backend
        self.game, self.teacher = game, teacher
        self._games: list[Any] = []

    def bind_game(self, game: Any) -> None:
        self._games.append(game)

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        from hiergym.envs.multiagent.players import make_player

        self.agent.reset(tasks, infos)
        self.players = [make_player(self.game, self.teacher, seed=int(info.get(EPISODE_SEED) or 0) % 2**32)
                        for info in infos]
        for player, game in zip(self.players, self._games, strict=False):
            bind = getattr(player, "bind_game", None)
            if callable(bind):
                bind(game)

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        style = self.agent.config.style
        expected = []
        for observation, info in zip(observations, infos, strict=True):
            action = self.players[info[EPISODE_INDEX]].act(observation, info)
            response = format_action_response(action, style=style)
            if parse_action(response, info.get("admissible_actions")).action != action:
                response = format_action_response(action, style="full")
            self.backend.executor_responses.append(response)
            expected.append(action)
        decisions = self.agent.act(observations, infos)
        for decision, action in zip(decisions, expected, strict=True):
            if isinstance(decision, Decision):
                decision.action = action  # the teacher's move is played whatever the parser read
        return decisions


# ------------------------------------------------------------------------------------------ demonstrations
def teacher_games(cfg: TrainConfig, episodes: int, first_seed: int) -> tuple[Any, list[Any]]:
    """``episodes`` games of the scripted ``sft_teacher`` against ``sft_partners`` (cycled), the teacher in seat
    ``e % 2`` of game ``e`` (seed ``first_seed + e``), played through the LLM agent of ``cfg`` (its prompts,
    its output format, its constraint's choices). Returns the played games and the teacher's generations."""
    teacher = ScriptedTeacher(build_agent(cfg, None, temperature=0.0), cfg.game, cfg.sft_teacher)
    partners = list(cfg.sft_partners) or [cfg.sft_teacher]
    seats, resets = [], []
    for e in range(episodes):
        teacher_seat = SEATS[e % 2]
        partner = partners[(e // 2) % len(partners)]
        seats.append({teacher_seat: teacher, SEATS[1 - e % 2]: partner})
        resets.append({"seed": first_seed + e, "options": {"split": cfg.train_split}})
    played = play_games(cfg.game, seats, resets, game_kwargs=cfg.game_kwargs,
                        max_moves=cfg.max_episode_steps * len(SEATS))
    teacher_key = next(i for i, a in enumerate(played.agents) if a is teacher)
    return played, [g for d in played.decisions(teacher_key) for g in d.generations]


def game_tokenizer_texts(cfg: TrainConfig) -> list[str]:
    """``tokenizer=env`` for a game: the text of ``tokenizer_episodes`` games of the scripted teacher (the
    prompts both seats' agents would see, its answers and the admissible moves), on seeds of their own."""
    _, generations = teacher_games(cfg, cfg.tokenizer_episodes, cfg.seed + 20_000_000)
    return [text for g in generations for text in (g.prompt_text, g.response_text, *(g.choices or ()))]


# ------------------------------------------------------------------------------------------ Kuhn exploitability
class _ForcedBackend:
    """Answers every prompt with the queued responses and records the prompts (to rebuild an info set's)."""

    def __init__(self) -> None:
        self.responses: list[str] = []
        self.prompts: list[str] = []

    def generate(self, prompts, **kwargs):
        from hiergym.agents.base import Completion

        self.prompts += list(prompts)
        return [Completion(prompt_text=p, response_text=self.responses.pop(0)) for p in prompts]


def kuhn_strategy(policy: Any, config: TrainConfig, temperature: float = 1.0):
    """The learner's exact behaviour strategy in one-hand Kuhn poker: for every information set (own card,
    history, seat) the prompt the agent sees there (rebuilt by playing the history through the agent), and the
    probability of each legal action's answer (its canonical response and end of sequence) at ``temperature``,
    renormalised over the legal actions. Returns ``(strategy, legal_mass)``: the strategy function
    :func:`hiergym.envs.multiagent.kuhn_poker_v0.exploitability` takes, and the mean probability the model puts
    on legal canonical answers (the rest would be illegal moves, which fold)."""
    from hiergym.envs.multiagent import kuhn_poker_v0

    table: dict[tuple[str, str, bool], dict[str, float]] = {}
    masses = []
    deals = {}
    for seed in range(200):  # one seed per (player_0's card, player_1's card)
        env = kuhn_poker_v0.raw_env(num_hands=1)
        env.reset(seed=seed)
        deals.setdefault(env.game.deals[0], seed)
        if len(deals) == 6:
            break
    policy.model.eval()
    for first in (True, False):
        seat = "player_0" if first else "player_1"
        for history in (["", "cb"] if first else ["b", "c"]):
            for card in kuhn_poker_v0.CARDS:
                # a deal that gives the seat this card (the other card is hidden from it, so any one does)
                seed = next(s for deal, s in deals.items() if deal[0 if first else 1] == card)
                env = kuhn_poker_v0.raw_env(num_hands=1)
                env.reset(seed=seed)
                backend = _ForcedBackend()
                agent = build_agent(config, backend, temperature)
                agent.reset([env.game.task(seat)], [dict(env.infos[seat])])
                for code in history:  # the history's moves; the seat's own ones through the agent (its memory)
                    action = kuhn_poker_v0.ACTIONS[code]
                    if env.agent_selection == seat:
                        backend.responses.append(format_action_response(action, style=agent.config.style))
                        agent.act([str(env.observe(seat))], [{**env.infos[seat], EPISODE_INDEX: 0}])
                    env.step(action)
                backend.responses.append("")
                legal = list(env.infos[seat]["admissible_actions"])
                agent.act([str(env.observe(seat))], [{**env.infos[seat], EPISODE_INDEX: 0}])
                prompt_ids = policy.encode_prompt(backend.prompts[-1])
                responses = [policy.tokenizer(format_action_response(a, style=agent.config.style),
                                              add_special_tokens=False)["input_ids"] + [policy.eos_token_ids[0]]
                             for a in legal]
                with torch.no_grad():
                    logprobs = policy.sequence_logprobs([prompt_ids] * len(legal), responses,
                                                        temperature=temperature if temperature > 0 else 1.0)
                mass = np.array([float(lp.sum().exp()) for lp in logprobs])
                masses.append(float(mass.sum()))
                probs = mass / mass.sum() if mass.sum() > 0 else np.full(len(legal), 1 / len(legal))
                table[(card, history, first)] = dict(zip(legal, probs.tolist(), strict=True))

    def strategy(card: str, history: str, first_to_act: bool) -> dict[str, float]:
        return table[(card, history, first_to_act)]

    return strategy, float(np.mean(masses))


def kuhn_exploitability(policy: Any, config: TrainConfig, temperature: float = 1.0) -> dict[str, float]:
    """Exact exploitability (chips per hand a best response wins, both seats) of the learner's strategy."""
    from hiergym.envs.multiagent import kuhn_poker_v0

    strategy, mass = kuhn_strategy(policy, config, temperature)
    return {"exploitability": kuhn_poker_v0.exploitability(strategy), "legal_answer_mass": mass}


# ------------------------------------------------------------------------------------------ the trainer
class SelfPlayTrainer(Trainer):
    """The trainer of multi-agent games (see the module docstring); reuses :class:`Trainer`'s policy,
    optimiser, sequences, logging and checkpoints."""

    def __init__(self, config: TrainConfig, *, resume: bool = False):
        if not config.game:
            raise ValueError("SelfPlayTrainer needs config.game (a multi-agent game, e.g. tictactoe_v0)")
        super().__init__(config, resume=resume)
        self.train_vec.close()  # the single-agent rollout env is not used: games are played by play_games
        self.state.setdefault("snapshots", [])
        self._frozen: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        if not self.state["sft_done"]:
            if cfg.sft_episodes > 0 and cfg.sft_steps > 0:
                self.state["initial"] = self.evaluate("initial")
                self.behaviour_clone()
            self.state["sft_done"] = True
            self.state["before_rl"] = self.evaluate("before_rl")
            self.save_snapshot(0)
            self.save_checkpoint()
        if cfg.kl_coef > 0:
            self.reference = self.kl_reference()
        self.rl_iterations()
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.plot_curves()
        return summary

    progress_label = "self-play"

    def progress_postfix(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"win": f"{metrics['train_success']:.2f}"}

    def after_iteration(self, iterations_done: int) -> None:
        if iterations_done % self.config.snapshot_every == 0:
            self.save_snapshot(iterations_done)

    def evaluate_after_rl(self) -> None:
        self.state["after_rl"] = self.evaluate("after_rl")

    # ---------------------------------------------------------------------------------- behaviour cloning
    def behaviour_clone(self) -> list[float]:
        cfg = self.config
        played, generations = teacher_games(cfg, cfg.sft_episodes, cfg.seed + 10_000_000)
        # Under action_constraint=admissible each pair carries the masks the move would be sampled under
        # (the admissible moves of the seat in that position), as the single-agent trainer's cloning does.
        pairs = [self.demonstration_pair(Demonstration(g.prompt_text, g.response_text, level=g.level,
                                                       choices=g.choices)) for g in generations]
        bar = _progress_bar(cfg.sft_steps, cfg.progress, "BC")

        def report(step: int, loss: float) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")

        losses = behaviour_cloning(self.policy, pairs, steps=cfg.sft_steps, batch_size=cfg.sft_batch_size,
                                   learning_rate=cfg.sft_learning_rate, seed=cfg.seed, progress=report)
        if bar is not None:
            bar.close()
        teacher_seats = [(g, SEATS[g.index % 2]) for g in played.games]
        self.log({"phase": "sft", "demonstrations": len(pairs), "teacher": cfg.sft_teacher,
                  "teacher_win_rate": float(np.mean([g.won[s] for g, s in teacher_seats])),
                  "sft_first_loss": losses[0], "sft_final_loss": float(np.mean(losses[-10:]))})
        return losses

    # ---------------------------------------------------------------------------------- RL
    def _max_moves(self) -> int:
        return self.config.max_episode_steps * len(SEATS)

    def _opponent_for(self, batch_index: int, task: int) -> str:
        mix = self.config.opponent_mix
        names = sorted(mix)
        rng = random.Random(stable_seed(self.config.seed, "opponent", batch_index, task))
        return rng.choices(names, weights=[float(mix[n]) for n in names])[0]

    def train_iteration(self, iteration: int) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        batch_index = self.state["train_batches"]
        learner = build_agent(dataclasses.replace(cfg, seed=cfg.seed + batch_index), self.policy, cfg.temperature)
        seats, resets, group_ids, league_games, kinds = [], [], [], {}, []
        for b in range(cfg.num_tasks):
            kind = self._opponent_for(batch_index, b)
            kinds.append(kind)
            snapshot = None
            if kind == SELF:
                opponent = learner
            elif kind in (FROZEN, LEAGUE):
                snapshot = self.sample_snapshot(kind, batch_index, b)
                opponent = self.frozen_agent(snapshot["path"])
            else:
                opponent = kind  # a scripted player's name
            learner_seat = SEATS[(batch_index + b) % 2]
            task_seed = stable_seed(cfg.seed, "selfplay-task", batch_index, b) % 2**31
            for _ in range(cfg.group_size):
                k = len(seats)
                seats.append({learner_seat: learner, SEATS[1 - SEATS.index(learner_seat)]: opponent})
                resets.append({"seed": task_seed, "options": {"split": cfg.train_split}})
                group_ids.append(b)
                if snapshot is not None:
                    league_games[k] = (snapshot["path"], learner_seat)
        played = play_games(cfg.game, seats, resets, group_ids=group_ids, game_kwargs=cfg.game_kwargs,
                            invalid_action_penalty=cfg.invalid_action_penalty, max_moves=self._max_moves())
        self.state["train_batches"] += 1
        rollout_seconds = time.perf_counter() - started
        learner_key = next(i for i, a in enumerate(played.agents) if a is learner)
        records = [r for r, a in zip(played.records, played.record_agents, strict=True) if a == learner_key]
        self._update_league(played.games, league_games)
        batch = StepBatch.from_records(records)
        advantages = compute_advantages(cfg.estimator, batch, **cfg.estimator_options)
        sequences = self._sequences(batch, advantages, ["executor"])
        update = policy_update(self.policy, self.optimizer, sequences, epochs=cfg.epochs,
                               mini_batches=cfg.mini_batches, micro_batch_size=cfg.micro_batch_size,
                               loss=cfg.loss_config(), reference=self.reference, max_grad_norm=cfg.max_grad_norm,
                               rng=self.rng, packed=cfg.packed_update, tis_cap=cfg.tis_cap or None)
        outcomes = [_outcome(g, s) for g, assignment in zip(played.games, seats, strict=True)
                    for s in SEATS if assignment[s] is learner]
        metrics = {
            "phase": "rl", "iteration": iteration + 1, "rows": len(batch),
            "train_success": float(np.mean([o["win"] for o in outcomes])) if outcomes else 0.0,
            "train_non_loss": float(np.mean([o["non_loss"] for o in outcomes])) if outcomes else 0.0,
            "train_return": float(np.mean([o["payoff"] for o in outcomes])) if outcomes else 0.0,
            "opponents": {k: kinds.count(k) for k in sorted(set(kinds))},
            "invalid_rate": float(batch.invalid.mean()) if len(batch) else 0.0,
            "advantage_std": float(advantages.std()) if len(batch) else 0.0,
            "generated_tokens": sum(len(r.response_token_ids) for r in records),
            "rollout_seconds": rollout_seconds, "update_seconds": time.perf_counter() - started - rollout_seconds,
            "snapshots": len(self.state["snapshots"]),
            **{f"update_{k}": v for k, v in update.items()},
        }
        self.log(metrics)
        return metrics

    # ---------------------------------------------------------------------------------- snapshots and league
    def save_snapshot(self, iteration: int) -> Path:
        """Save the policy as ``OUT/snapshots/iter_NNNNNN`` and add it to the league (replacing an entry of the
        same iteration left by a run that was killed before its next checkpoint)."""
        relative = f"snapshots/iter_{iteration:06d}"
        path = self.out / relative
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.policy.save(tmp, agent_config=saved_agent_settings(self.config))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        self._frozen.pop(relative, None)
        snapshots = [s for s in self.state["snapshots"] if s["path"] != relative]
        snapshots.append({"iteration": iteration, "path": relative, "games": 0, "score": 0.0})
        self.state["snapshots"] = snapshots
        return path

    def league(self) -> list[dict[str, Any]]:
        """The snapshots the league samples from: the last ``league_size``."""
        return self.state["snapshots"][-self.config.league_size:]

    def sample_snapshot(self, kind: str, batch_index: int, task: int) -> dict[str, Any]:
        """``frozen``: the latest snapshot; ``league``: one drawn by ``league_sampling`` (module docstring)."""
        league = self.league()
        if kind == FROZEN or len(league) == 1:
            return league[-1]
        if self.config.league_sampling == "uniform":
            weights = [1.0] * len(league)
        else:
            weights = [(1 - (s["score"] + 1) / (s["games"] + 2)) ** 2 for s in league]
        rng = random.Random(stable_seed(self.config.seed, "league", batch_index, task))
        return rng.choices(league, weights=weights)[0]

    def frozen_agent(self, relative: str) -> Any:
        """An agent playing snapshot ``relative`` (frozen weights, the rollout temperature); one per snapshot,
        so every game against it is generated in one batch."""
        if relative not in self._frozen:
            from hiergym.agents.policy import CausalLMPolicy

            policy = CausalLMPolicy.from_pretrained(self.out / relative, device=self.policy.device,
                                                    dtype=torch.float32)
            for p in policy.model.parameters():
                p.requires_grad_(False)
            if len(self._frozen) >= self.config.league_size:
                self._frozen.pop(next(iter(self._frozen)))
            self._frozen[relative] = build_agent(self.config, policy, self.config.temperature)
        return self._frozen[relative]

    def _update_league(self, games: list[GameResult], league_games: dict[int, tuple[str, str]]) -> None:
        by_path = {s["path"]: s for s in self.state["snapshots"]}
        for k, (path, seat) in league_games.items():
            outcome = _outcome(games[k], seat)
            entry = by_path.get(path)
            if entry is not None:
                entry["games"] += 1
                entry["score"] += outcome["win"] + 0.5 * outcome["draw"]

    # ---------------------------------------------------------------------------------- evaluation
    def evaluate(self, label: str) -> dict[str, Any]:
        """The learner (at ``eval_temperature``) against every opponent of ``eval_opponents``: game ``i`` has
        seed ``seed + i`` and task ``i`` of ``eval_split``, the learner in seat ``i % 2``; per-game rows go to
        ``OUT/eval/LABEL/OPPONENT.jsonl`` (paired before/after by game), the primary opponent's as
        ``results.jsonl``."""
        cfg = self.config
        run_dir = self.out / "eval" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        started = time.perf_counter()
        learner = build_agent(cfg, self.policy, cfg.eval_temperature)
        result: dict[str, Any] = {"label": label, "opponents": {}}
        for opponent in cfg.eval_opponents:
            rows = self.play_matches(learner, opponent, cfg.eval_episodes)
            with open(run_dir / f"{opponent}.jsonl", "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
            result["opponents"][opponent] = match_statistics(rows)
        if cfg.game == "kuhn_poker_v0" and cfg.game_kwargs.get("num_hands", 1) == 1:
            result.update(kuhn_exploitability(self.policy, cfg, cfg.temperature if cfg.temperature > 0 else 1.0))
        primary = result["opponents"][cfg.eval_opponents[0]]
        result["success_rate"] = primary["success_rate"]
        result["wall_time_s"] = time.perf_counter() - started
        (run_dir / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
        self.state["evaluations"].append(result)
        self.log({"phase": "eval", "label": label, "success_rate": result["success_rate"],
                  **{f"{o}_{k}": v for o, s in result["opponents"].items() for k, v in s.items()
                     if isinstance(v, int | float)},
                  **{k: result[k] for k in ("exploitability", "legal_answer_mass") if k in result}})
        return result

    def play_matches(self, learner: Any, opponent: str, games: int) -> list[dict[str, Any]]:
        """``games`` games of the learner against ``opponent`` (a scripted name, or ``self``), one row each."""
        cfg = self.config
        seats, resets = [], []
        for i in range(games):
            seat = SEATS[i % 2]
            other = learner if opponent == SELF else opponent
            seats.append({seat: learner, SEATS[1 - i % 2]: other})
            resets.append({"seed": cfg.seed + i, "options": {"split": cfg.eval_split, "task_id": i}})
        self.policy.model.eval()
        played = play_games(cfg.game, seats, resets, game_kwargs=cfg.game_kwargs, max_moves=self._max_moves())
        rows = []
        for game in played.games:
            seat = SEATS[game.index % 2]
            rows.append({"episode": game.index, "seed": game.seed, "seat": seat, **_outcome(game, seat),
                         "invalid_moves": game.invalid[seat], "moves": game.moves[seat]})
        return rows

    # ---------------------------------------------------------------------------------- records
    def plot_curves(self) -> Path | None:
        """The trainer's curves (training win rate, the primary opponent's evaluations), without the evaluation
        before behaviour cloning (it belongs to no RL iteration)."""
        metrics = self.out / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        kept = [r for r in rows if not (r.get("phase") == "eval" and r.get("label") == "initial")]
        backup = metrics.read_text() if metrics.is_file() else ""
        try:
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
            return super().plot_curves()
        finally:
            metrics.write_text(backup)

    def summary(self) -> dict[str, Any]:
        evaluations = {e["label"]: e for e in self.state["evaluations"]}
        paired = {}
        before_dir, after_dir = self.out / "eval" / "before_rl", self.out / "eval" / "after_rl"
        for opponent in self.config.eval_opponents:
            first, second = before_dir / f"{opponent}.jsonl", after_dir / f"{opponent}.jsonl"
            if first.is_file() and second.is_file():
                paired[opponent] = paired_game_differences(_read_rows(first), _read_rows(second))
        return {"game": self.config.game, "estimator": self.config.estimator,
                "estimator_options": self.config.estimator_options, "opponent_mix": self.config.opponent_mix,
                "iterations": self.state["iteration"], "eval_episodes": self.config.eval_episodes,
                "eval_temperature": self.config.eval_temperature, "snapshots": len(self.state["snapshots"]),
                "evaluations": self.state["evaluations"], "rl_gain": paired, "out_dir": str(self.out),
                "initial": evaluations.get("initial"), "before_rl": evaluations.get("before_rl"),
                "after_rl": evaluations.get("after_rl")}


# ------------------------------------------------------------------------------------------ helpers
def _outcome(game: GameResult, seat: str) -> dict[str, Any]:
    other = next(s for s in game.payoffs if s != seat)
    mine, theirs = game.payoffs[seat], game.payoffs[other]
    return {"payoff": mine, "win": int(mine > theirs), "draw": int(mine == theirs), "loss": int(mine < theirs),
            "non_loss": int(mine >= theirs), "success": int(game.won[seat]),
            "agreement": int(game.outcome == "deal") if game.outcome is not None else None}


def match_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates with Wilson intervals, the mean payoff with a normal 95% interval, over one opponent's games."""
    n = len(rows)
    stats: dict[str, Any] = {"games": n}
    for key in ("win", "draw", "loss", "non_loss", "success"):
        count = sum(r[key] for r in rows)
        stats[f"{key}_rate"] = count / n
        if key in ("non_loss", "success", "win"):
            stats[f"{key}_ci95"] = list(wilson_interval(count, n))
    payoffs = np.array([r["payoff"] for r in rows], float)
    half = 1.959963984540054 * payoffs.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
    stats["mean_payoff"] = float(payoffs.mean())
    stats["payoff_ci95"] = [float(payoffs.mean() - half), float(payoffs.mean() + half)]
    agreements = [r["agreement"] for r in rows if r.get("agreement") is not None]
    if agreements:
        stats["agreement_rate"] = float(np.mean(agreements))
        deals = [r["payoff"] for r in rows if r.get("agreement")]
        stats["mean_deal_utility"] = float(np.mean(deals)) if deals else 0.0
    stats["invalid_move_rate"] = sum(r["invalid_moves"] for r in rows) / max(sum(r["moves"] for r in rows), 1)
    return stats


def paired_game_differences(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """After minus before on the same games (same seeds and seats): non-loss, win and success rates (McNemar)
    and the mean payoff (paired normal interval)."""
    out = {}
    for key in ("non_loss", "win", "success"):
        first = [_Row(r["episode"], r[key]) for r in before]
        second = [_Row(r["episode"], r[key]) for r in after]
        out[key] = paired_success_difference(first, second)
    out["payoff"] = paired_mean_difference({r["episode"]: r["payoff"] for r in before},
                                           {r["episode"]: r["payoff"] for r in after})
    return out


@dataclasses.dataclass
class _Row:
    episode: int
    success: bool


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_selfplay_summary(summary: dict[str, Any]) -> str:
    """The run's table: every evaluation against every opponent, and the paired RL gain."""
    lines = [f"\n{summary['game']} · {summary['estimator']} · opponents {summary['opponent_mix']} · "
             f"{summary['iterations']} iterations · {summary['eval_episodes']} games per opponent"]
    lines.append(f"{'evaluation':<12}{'opponent':<10}{'win':>7}{'draw':>7}{'loss':>7}{'non-loss':>10}"
                 f"{'success':>9}{'payoff (95% CI)':>26}")
    for label in ("initial", "before_rl", "after_rl"):
        e = summary.get(label)
        if not e:
            continue
        for opponent, s in e["opponents"].items():
            low, high = s["payoff_ci95"]
            lines.append(f"{label:<12}{opponent:<10}{s['win_rate']:>7.1%}{s['draw_rate']:>7.1%}{s['loss_rate']:>7.1%}"
                         f"{s['non_loss_rate']:>10.1%}{s['success_rate']:>9.1%}{s['mean_payoff']:>+10.3f} [{low:+.3f}, {high:+.3f}]"
                         + (f"  agreement {s['agreement_rate']:.1%}, deal utility {s['mean_deal_utility']:.2f}"
                            if "agreement_rate" in s else ""))
        if "exploitability" in e:
            lines.append(f"{label:<12}exploitability {e['exploitability']:.4f} chips/hand "
                         f"(legal answer mass {e['legal_answer_mass']:.3f})")
    for opponent, gain in (summary.get("rl_gain") or {}).items():
        nl, pay = gain["non_loss"], gain["payoff"]
        lines.append(f"RL gain vs {opponent}: non-loss {100 * nl['difference']:+.1f} points "
                     f"[{100 * nl['ci95'][0]:+.1f}, {100 * nl['ci95'][1]:+.1f}] (McNemar p = {nl['p_value']:.2g}); "
                     f"payoff {pay['difference']:+.3f} [{pay['ci95'][0]:+.3f}, {pay['ci95'][1]:+.3f}] "
                     f"(p = {pay['p_value']:.2g})")
    lines.append(f"metrics, snapshots and checkpoint in {summary['out_dir']}")
    return "\n".join(lines)
