"""Expert demonstrations in an LLM agent's own prompt and output format, produced by the agent itself.

:class:`ExpertDemonstrator` plays the environment's ``expert_plan()`` *through* a real
:class:`~hiergym.agents.llm.LLMAgent` or :class:`~hiergym.agents.hierarchical.HierarchicalAgent`: the agent
builds its prompts with its own prompt and memory code, and its backend (a :class:`ScriptedBackend`) answers
each prompt with the expert's next move written in the agent's output format. The prompts a behaviour-cloned
model is trained on are therefore, by construction, the prompts it sees when it plays.

For the hierarchical agent the expert's plan is cut into subgoals: the env's own decomposition where it has one
(``expert_subgoals()``: ALFWorld's subgoals end at an interaction with an object and are named by it, "take pan 1
from cabinet 2"; Sokoban's are pushes, "push box 2 left"), else chunks of ``replan_every`` actions named by their
actions (the way a planner would phrase a short instruction); a subgoal longer than ``replan_every`` continues,
under the same name, in the next segment (the agent re-plans at that cadence). The executor's answers are the
subgoal's actions, the last one of each segment marked ``<subgoal_done/>`` so the agent closes the segment and
plans again. An env whose subgoal names are computed from the state (``subgoal_names_from_state``: Sokoban's
box numbers and push counts) gets its rest named again where a cut subgoal continues, and the cut segment ends
at ``replan_every`` without ``<subgoal_done/>`` (ALFWorld's and WebShop's keep the earlier rule their measured
figures were made with). Every answer is one the agent's parser reads back as the expert's action (a
compact-style bare action that is not in the admissible list is written in ``<action>`` tags).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from hiergym.agents.base import STOP_EPISODE, BatchedAgent, Completion, Decision, episode_indices
from hiergym.agents.hierarchical import SUBGOAL_STOP, HierarchicalAgent
from hiergym.agents.llm import LLMAgent
from hiergym.agents.parsing import parse_action
from hiergym.agents.prompts import format_action_response, format_subgoal_response


def describe_chunk(actions: list[str]) -> str:
    """A subgoal text for a chunk of expert actions ("up, up, then left")."""
    if len(actions) == 1:
        return actions[0]
    return ", ".join(actions[:-1]) + ", then " + actions[-1]


class ScriptedBackend:
    """A :class:`~hiergym.agents.base.TextBackend` that answers with queued responses, in order: planner
    prompts (those stopped at ``</subgoal>``) from ``planner_responses``, the others from
    ``executor_responses``."""

    def __init__(self) -> None:
        self.planner_responses: deque[str] = deque()
        self.executor_responses: deque[str] = deque()

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128, temperature: float = 1.0,
                 top_p: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
                 choices: Sequence[Sequence[str] | None] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[Completion]:
        queue = self.planner_responses if stop and SUBGOAL_STOP[0] in stop else self.executor_responses
        if len(queue) < len(prompts):
            raise RuntimeError(f"scripted backend: {len(prompts)} prompts for {len(queue)} queued responses")
        # ``choices`` (constrained decoding) are kept, so the demonstration is trained under the same masks.
        return [Completion(prompt_text=prompt, response_text=queue.popleft(),
                           choices=list(choices[k]) if choices is not None and choices[k] is not None else None)
                for k, prompt in enumerate(prompts)]


class ExpertDemonstrator(BatchedAgent):
    """Plays the env's expert through ``agent`` (see the module docstring); needs :meth:`attach_envs`.

    An episode whose expert has no plan from the current state ends there (``stop_episode``).
    """

    def __init__(self, agent: LLMAgent):
        self.agent = agent
        self.backend = ScriptedBackend()
        agent.backend = self.backend
        self.hierarchical = isinstance(agent, HierarchicalAgent)
        if self.hierarchical:
            agent.planner_backend = agent.executor_backend = self.backend
            self.chunk_size = agent.config.replan_every
        else:
            self.chunk_size = 1
        self.envs: list[Any] = []

    def attach_envs(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        self.agent.reset(tasks, infos)
        self.plans: list[list[tuple[str | None, list[str]]]] = [[] for _ in tasks]
        self.chunks: list[list[str]] = [[] for _ in tasks]
        self.names: list[str | None] = [None for _ in tasks]
        self.expected: list[str | None] = [None for _ in tasks]
        #: The current chunk is a subgoal cut at ``replan_every`` steps whose rest is named again from the state
        #: (``subgoal_names_from_state``): its segment ends without ``<subgoal_done/>``.
        self.renamed_cut: list[bool] = [False for _ in tasks]

    def _next_chunk(self, index: int) -> list[str]:
        """The next segment's actions (its subgoal's name in ``self.names``); [] when the expert has no plan."""
        if not self.plans[index]:
            env = self.envs[index].unwrapped
            subgoals = env.expert_subgoals() if self.hierarchical and hasattr(env, "expert_subgoals") else None
            self.plans[index] = (list(subgoals) if subgoals else
                                 [(None, [a]) for a in (env.expert_plan() or [])])
        plan = self.plans[index]
        if not plan:
            return []
        name, actions = plan[0]
        if name is None:  # no decomposition: a chunk of the plain plan's next actions
            actions = [a for _, step in plan[:self.chunk_size or len(plan)] for a in step]
            del plan[:len(actions)]
            self.names[index] = describe_chunk(actions)
            return actions
        size = self.chunk_size or len(actions)
        chunk, rest = actions[:size], actions[size:]
        self.renamed_cut[index] = bool(rest) and getattr(self.envs[index].unwrapped, "subgoal_names_from_state",
                                                         False)
        if self.renamed_cut[index]:
            # Sokoban's names count boxes and pushes from the state: the rest is named again where it starts.
            plan.clear()
        elif rest:
            plan[0] = (name, rest)
        else:
            plan.pop(0)
        self.names[index] = name
        return chunk

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        if not self.envs:
            raise RuntimeError("the expert demonstrator needs the environments: call attach_envs(envs) first")
        style = self.agent.config.style
        acting: list[int] = []
        outputs: list[str | Decision | None] = [None] * len(infos)
        for row, index in enumerate(episode_indices(infos)):
            new_chunk = self.agent.states[index].need_plan if self.hierarchical else not self.chunks[index]
            if new_chunk:
                self.chunks[index] = self._next_chunk(index)
                if not self.chunks[index]:
                    outputs[row] = Decision("", info={STOP_EPISODE: "the env's expert has no plan from this state"})
                    continue
                if self.hierarchical:
                    self.backend.planner_responses.append(
                        format_subgoal_response(self.names[index] or "", style=style))
            action = self.chunks[index].pop(0)
            # A renamed cut is not done: its segment ends at replan_every and the planner names the rest.
            done_marker = self.hierarchical and not self.chunks[index] and not self.renamed_cut[index]
            response = format_action_response(action, style=style, subgoal_done=done_marker)
            if parse_action(response, self.agent.readable_actions(infos[row])).action != action:
                # A bare compact answer reads back only as an admissible action or a family's template; any
                # other free-text one (a search query no list spells out) is demonstrated in tags, which
                # always read back.
                response = format_action_response(action, style="full", subgoal_done=done_marker)
            self.backend.executor_responses.append(response)
            self.expected[index] = action
            acting.append(row)
        if acting:
            decisions = self.agent.act([observations[r] for r in acting], [infos[r] for r in acting])
            for row, decision in zip(acting, decisions, strict=True):
                expected = self.expected[episode_indices([infos[row]])[0]]
                if isinstance(decision, Decision) and decision.action != expected:
                    # The agent's parser did not read back the expert's move: play the expert's move anyway
                    # and say so (the demonstration still teaches the formatted answer).
                    decision.info["demonstration_mismatch"] = f"agent read {decision.action!r}"
                    decision.action = expected or ""
                outputs[row] = decision
        return [o for o in outputs if o is not None]
