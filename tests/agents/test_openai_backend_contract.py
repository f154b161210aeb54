"""OpenAIChatBackend against a real local HTTP server: per-prompt errors, the retry policy, the /v1 hint, the
system message and token log-probs, through both HTTP clients (the ``openai`` package and ``urllib``)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import pytest

from hiergym.agents.base import EPISODE_INDEX
from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
from hiergym.agents.llm import AGENT_ERROR, LLMAgent, LLMAgentConfig
from hiergym.agents.openai_backend import OpenAIChatBackend, openai_available
from hiergym.agents.prompts import FAMILIES, executor_prompt

TRANSPORTS = [
    pytest.param("openai", marks=pytest.mark.skipif(not openai_available(), reason="openai is not installed")),
    "urllib",
]


def reply(content: str, *, logprobs: list | None = None, usage: bool = True) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    data = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}
    if usage:
        data["usage"] = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    return data


class FakeServer:
    """A fake OpenAI-compatible server: ``respond(path, body) -> (status, payload[, headers[, delay]])``.

    ``threaded=False`` serves one request at a time, like a llama.cpp server with one slot.
    """

    def __init__(self, respond, *, threaded: bool = True):
        self.respond = respond
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.paths.append(self.path)
                status, payload, *rest = server.respond(self.path, body)
                headers = rest[0] if rest else {}
                if len(rest) > 1:
                    time.sleep(rest[1])
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                try:  # one write: no delayed-ACK stall between headers and body
                    self.wfile.write(head.encode() + b"\r\n" + data)
                    self.wfile.flush()
                except OSError:
                    pass  # the client gave up (a timeout test)

        self.httpd = (ThreadingHTTPServer if threaded else HTTPServer)(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def backend(server: FakeServer, transport: str, **kwargs) -> OpenAIChatBackend:
    return OpenAIChatBackend("m", kwargs.pop("base_url", server.base_url), api_key="k", backoff=0.01,
                             transport=transport, **kwargs)


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def infos_for(n: int) -> list[dict]:
    return [{"admissible_actions": ["up", "down"], EPISODE_INDEX: i} for i in range(n)]


# ------------------------------------------------------------------------------ per-episode failures
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_one_failed_request_fails_only_its_episode(transport):
    def respond(path, body):
        if "obs2" in user_text(body):
            return 500, {"error": {"message": "CUDA out of memory on prompt 2"}}
        return 200, reply("<action>up")

    with FakeServer(respond) as server:
        agent = LLMAgent(backend(server, transport, concurrency=4), LLMAgentConfig(family="sokoban"))
        agent.reset(["t"] * 4, infos_for(4))
        decisions = agent.act([f"obs{i}" for i in range(4)], infos_for(4))
    assert [d.action for d in decisions] == ["up", "up", "", "up"]
    failed = decisions[2]
    assert set(failed.info) == {AGENT_ERROR}
    assert "HTTP 500" in failed.info[AGENT_ERROR] and "CUDA out of memory on prompt 2" in failed.info[AGENT_ERROR]
    assert failed.generations and failed.generations[0].parse_ok is False
    assert all(AGENT_ERROR not in d.info for k, d in enumerate(decisions) if k != 2)
    # a 500 without Retry-After is not retried: the same failure again would only cost time
    assert sum("obs2" in user_text(b) for b in server.requests) == 1
    assert agent.states[2].pending_action is None  # nothing of the failed step goes into the history


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hierarchical_planner_and_executor_errors_fail_only_their_episodes(transport):
    def respond(path, body):
        text = user_text(body)
        planner = "<subgoal>" in text
        if planner and "obs1" in text:
            return 400, {"error": {"message": "planner prompt too long"}}
        if not planner and "obs3" in text:
            return 503, {"error": {"message": "no slot available"}}, {"Retry-After": "0"}
        return 200, reply("<subgoal>push</subgoal>" if planner else "<action>down")

    with FakeServer(respond) as server:
        agent = HierarchicalAgent(backend(server, transport, concurrency=4, max_retries=1),
                                  HierarchicalAgentConfig(family="sokoban"))
        agent.reset(["t"] * 4, infos_for(4))
        decisions = agent.act([f"obs{i}" for i in range(4)], infos_for(4))
    assert [d.action for d in decisions] == ["down", "", "down", ""]
    assert "planner prompt too long" in decisions[1].info[AGENT_ERROR]
    assert [g.level for g in decisions[1].generations] == ["planner"]
    assert "no slot available" in decisions[3].info[AGENT_ERROR] and "after 2 attempts" in decisions[3].info[AGENT_ERROR]
    assert [g.level for g in decisions[3].generations] == ["planner", "executor"]
    for k in (0, 2):
        assert AGENT_ERROR not in decisions[k].info and decisions[k].info["subgoal"] == "push"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_generate_never_raises(transport):
    answers = iter([(200, "not json"), (200, {"no": "choices"}), (401, {"error": {"message": "bad key"}})])

    with FakeServer(lambda path, body: next(answers)) as server:
        out = backend(server, transport, concurrency=1).generate(["a", "b", "c"])
    assert [c.finish_reason for c in out] == ["error"] * 3 and all(c.response_text == "" for c in out)
    assert "invalid JSON" in out[0].error and "choices" in out[1].error and "HTTP 401" in out[2].error
    assert "bad key" in out[2].error and len(server.requests) == 3  # 4xx: not retried


# ---------------------------------------------------------------------------------- retry policy
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_read_timeout_is_not_retried_against_a_one_at_a_time_server(transport):
    def respond(path, body):
        return 200, reply("<action>up"), {}, 1.5  # slower than the client waits

    with FakeServer(respond, threaded=False) as server:
        started = time.monotonic()
        [out] = backend(server, transport, timeout=0.4, max_retries=3).generate(["x"])
        elapsed = time.monotonic() - started
    assert out.finish_reason == "error"
    assert out.error.startswith(f"read timed out after 0.4 s from {server.base_url}/chat/completions")
    assert len(server.requests) == 1 and elapsed < 1.4  # exactly one generation reached the server


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retry_timeouts_opt_in_and_connect_errors_are_retried(transport):
    with FakeServer(lambda path, body: (200, reply("<action>up"), {}, 0.6)) as server:
        [out] = backend(server, transport, timeout=0.2, max_retries=1, retry_timeouts=True).generate(["x"])
        time.sleep(0.7)
    assert "read timed out" in out.error and "after 2 attempts" in out.error and len(server.requests) == 2
    closed = OpenAIChatBackend("m", "http://127.0.0.1:9/v1", backoff=0.01, max_retries=2, timeout=2,
                               transport=transport)
    [out] = closed.generate(["x"])
    assert out.error.startswith("cannot reach http://127.0.0.1:9/v1/chat/completions") and "after 3 attempts" in out.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_429_and_503_are_retried_honouring_retry_after(transport):
    answers = iter([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"}),
                    (503, {"error": {"message": "loading"}}), (200, reply("<action>up"))])
    with FakeServer(lambda path, body: next(answers)) as server:
        started = time.monotonic()
        [out] = backend(server, transport, max_retries=3).generate(["x"])
    assert out.response_text == "<action>up" and out.error is None and len(server.requests) == 3
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------------------------- 404 hint
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_404_without_v1_suggests_v1(transport):
    def respond(path, body):
        if path != "/v1/chat/completions":
            return 404, {"detail": "Not Found"}
        if body["model"] != "m":
            return 404, {"error": {"message": f"The model `{body['model']}` does not exist."}}
        return 200, reply("<action>up")

    with FakeServer(respond) as server:
        [out] = backend(server, transport, base_url=server.root).generate(["x"])
        assert out.error.startswith(f"HTTP 404 from {server.root}/chat/completions: Not Found")
        assert f"try {server.root}/v1" in out.error and len(server.requests) == 1
        wrong_model = OpenAIChatBackend("nope", server.base_url, transport=transport)
        [out] = wrong_model.generate(["x"])
        assert "The model `nope` does not exist." in out.error and "try" not in out.error
        assert backend(server, transport).generate(["x"])[0].response_text == "<action>up"


# ---------------------------------------------------------------------------------- system message
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_agent_instructions_go_in_a_system_message(transport):
    with FakeServer(lambda path, body: (200, reply("<action>up"))) as server:
        agent = LLMAgent(backend(server, transport), LLMAgentConfig(family="sokoban"))
        agent.reset(["push the box"], infos_for(1))
        agent.act(["#####"], infos_for(1))
        compact = backend(server, transport).generate(["task: x\n#####\nactions: up, down\n"])
        custom = backend(server, transport, system_prompt="Be brief.")
        custom.generate([agent.build_prompt(agent.states[0], "#####", infos_for(1)[0])])
        one_message = backend(server, transport, system_message=False)
        one_message.generate([agent.build_prompt(agent.states[0], "#####", infos_for(1)[0])])
    assert compact[0].error is None
    full, bare, with_custom, unsplit = server.requests
    spec = FAMILIES["sokoban"]
    assert [m["role"] for m in full["messages"]] == ["system", "user"]
    assert full["messages"][0]["content"] == f"{spec.role}\n\n{spec.rules}"
    user = full["messages"][1]["content"]
    assert user.startswith("Your task: push the box") and "<action>" in user and spec.role not in user
    assert [m["role"] for m in bare["messages"]] == ["user"]  # compact prompts have no instructions to split
    assert with_custom["messages"][0]["content"] == f"Be brief.\n\n{spec.role}\n\n{spec.rules}"
    assert [m["role"] for m in unsplit["messages"]] == ["user"] and user_text(unsplit).startswith(spec.role)


# ------------------------------------------------------------------------------------------ logprobs
def vllm_logprobs(ids: list[int]) -> list[dict]:
    return [{"token": f"token_id:{i}", "logprob": -0.5 * k, "bytes": None, "top_logprobs": []}
            for k, i in enumerate(ids)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_logprobs_and_token_ids_are_kept(transport):
    def respond(path, body):
        if "plain" in user_text(body):  # llama.cpp / OpenAI: tokens as text
            return 200, reply("<action>up", logprobs=[{"token": "<", "logprob": -0.1}, {"token": "up", "logprob": -0.2}])
        return 200, reply("<action>up", logprobs=vllm_logprobs([7, 8, 9]))

    with FakeServer(respond) as server:
        agent = LLMAgent(backend(server, transport), LLMAgentConfig(family="sokoban"))
        agent.reset(["t"], infos_for(1))
        [decision] = agent.act(["obs"], infos_for(1))
        [plain] = backend(server, transport).generate(["plain"])
        [off] = backend(server, transport, logprobs=False).generate(["plain"])
    body = server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 1 and body["return_tokens_as_token_ids"] is True
    [generation] = decision.generations
    assert generation.response_token_ids == [7, 8, 9] and generation.response_logprobs == [0.0, -0.5, -1.0]
    assert generation.num_response_tokens == 3  # the server's count
    assert plain.response_logprobs == [-0.1, -0.2] and plain.response_token_ids == []
    assert not {"logprobs", "top_logprobs", "return_tokens_as_token_ids"} & set(server.requests[-1])
    assert off.error is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_that_rejects_the_logprob_fields_is_asked_again_without_them(transport):
    def openai_like(path, body):  # rejects vLLM's field, accepts logprobs
        if "return_tokens_as_token_ids" in body:
            return 400, {"error": {"message": "Unrecognized request argument supplied: return_tokens_as_token_ids"}}
        return 200, reply("<action>up", logprobs=[{"token": "up", "logprob": -0.3}])

    with FakeServer(openai_like) as server:
        client = backend(server, transport, concurrency=1)
        first = client.generate(["a"])[0]
        second = client.generate(["b"])[0]
    assert first.response_logprobs == [-0.3] and second.response_logprobs == [-0.3]
    assert len(server.requests) == 3 and client.logprob_level == 1  # one refusal, then remembered
    assert "return_tokens_as_token_ids" not in server.requests[2] and server.requests[2]["logprobs"] is True

    def no_logprobs(path, body):  # llama-cpp-python built with logits_all=False answers 500
        if body.get("logprobs"):
            return 500, {"error": {"message": "logprobs is not supported for models created with logits_all=False"}}
        return 200, reply("<action>up")

    with FakeServer(no_logprobs) as server:
        client = backend(server, transport)
        outs = client.generate(["a"]) + client.generate(["b"])
    assert [o.response_text for o in outs] == ["<action>up"] * 2 and client.logprob_level == 0
    assert len(server.requests) == 3 and "logprobs" not in server.requests[2]


def test_transport_auto_prefers_the_openai_package():
    auto = OpenAIChatBackend("m", "http://127.0.0.1:9/v1")
    assert auto.transport == ("openai" if openai_available() else "urllib")
    with pytest.raises(ValueError, match="transport"):
        OpenAIChatBackend("m", "http://127.0.0.1:9/v1", transport="curl")


def test_backend_pickles_for_harness_workers():
    import pickle

    client = OpenAIChatBackend("m", "http://127.0.0.1:9/v1", timeout=3)
    copy = pickle.loads(pickle.dumps(client))
    assert copy.timeout == 3 and copy.endpoint == client.endpoint


def test_full_prompt_of_every_family_splits():
    from hiergym.agents.prompts import split_system_prompt

    for family, spec in FAMILIES.items():
        prompt = executor_prompt(family=family, task="t", observation="o", admissible=["a"])
        system, user = split_system_prompt(prompt)
        assert system == f"{spec.role}\n\n{spec.rules}" and f"{system}\n\n{user}" == prompt


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_constrained_actions_go_in_the_guided_choice_field(transport):
    with FakeServer(lambda path, body: (200, reply("<action>down</action>"))) as server:
        agent = LLMAgent(backend(server, transport, concurrency=1),
                         LLMAgentConfig(family="sokoban", action_constraint="admissible"))
        agent.reset(["push the box", "push it"], infos_for(2))
        decisions = agent.act(["#####", "#####"], infos_for(2))
        free = backend(server, transport, choice_field="structured_outputs_choice")
        free.generate(["x"], choices=[None])
        free.generate(["x"], choices=[["a", "b"]])
    assert [d.action for d in decisions] == ["down", "down"]
    first, second, unconstrained, custom = server.requests
    assert first["guided_choice"] == second["guided_choice"] == ["<action>up</action>", "<action>down</action>"]
    assert "guided_choice" not in unconstrained and "structured_outputs_choice" not in unconstrained
    assert custom["structured_outputs_choice"] == ["a", "b"]
    assert decisions[0].generations[0].choices == first["guided_choice"]
