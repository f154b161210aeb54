"""Fault injection over whole runs: each fault of the hostile-tester report is injected for real and the
outcome checked (recovered: the run ends with every episode or iteration exactly once; refused or reported:
one clear line, nothing written). Prints one row per fault and the totals.

    python -m hiergym.benchmarks.reliability_faults

``reliability_envs`` is its twin for environments (junk actions, steps after the end).
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

SOKOBAN = "hiergym/Sokoban-v0"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ evaluation
def eval_killed_mid_line(tmp: Path) -> str:
    from hiergym.benchmarks.harness import evaluate

    out = tmp / "eval"
    evaluate(SOKOBAN, "random", episodes=8, out=str(out), progress=False, max_steps=5)
    path = out / "results.jsonl"
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:40])  # the kill cut the next line short
    evaluate(SOKOBAN, "random", episodes=12, out=str(out), progress=False, max_steps=5)
    episodes = [r["episode"] for r in _lines(path)]
    return "recovered" if sorted(episodes) == list(range(12)) else f"lost or duplicated: {episodes}"


def eval_two_writers(tmp: Path) -> str:
    from hiergym.benchmarks.harness import HarnessError, evaluate

    out = tmp / "eval2"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False)
        except HarnessError:
            return "refused"
    return "both wrote"


def eval_failed_start_then_retry(tmp: Path) -> str:
    from hiergym.benchmarks.harness import evaluate

    out = tmp / "eval3"
    try:
        evaluate(SOKOBAN, f"tiny:{tmp / 'missing'}", episodes=2, out=str(out), progress=False)
    except FileNotFoundError:
        pass
    summary = evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False, max_steps=5)
    return "recovered" if summary["episodes"] == 2 else "blocked"


def eval_one_request_fails(tmp: Path) -> str:
    """A model server that answers HTTP 500 to one prompt of each batch: only those episodes fail."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from hiergym.benchmarks.harness import evaluate

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # About one prompt in four fails, always the same ones (by content).
            if zlib.crc32(json.dumps(body["messages"]).encode()) % 4 == 0:
                self.send_response(500)
                self.end_headers()
                return
            payload = json.dumps({"choices": [{"message": {"content": "<action>up</action>"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 3}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        summary = evaluate(SOKOBAN, f"openai:m@http://127.0.0.1:{server.server_address[1]}/v1", episodes=16,
                           out=str(tmp / "eval4"), progress=False, max_steps=3,
                           agent_args={"max_retries": 0})
    finally:
        server.shutdown()
    errors, ran = summary["errors"], summary["episodes_ran"]
    return "recovered" if 0 < errors < 16 and ran == 16 - errors else f"errors {errors} of 16"


def eval_secret_argument(tmp: Path) -> str:
    from hiergym.benchmarks.harness import evaluate

    out = tmp / "eval5"
    evaluate(SOKOBAN, f"openai:m@http://127.0.0.1:{_free_port()}/v1", episodes=1, out=str(out), progress=False,
             agent_args={"api_key": "sk-fault-injection", "max_retries": 0})
    leaked = any("sk-fault-injection" in p.read_text() for p in out.rglob("*.json*"))
    return "leaked" if leaked else "refused"


# ------------------------------------------------------------------------------------------ training
def _train_config(out: Path, iterations: int):
    from hiergym.training.config import load_config

    return load_config("sokoban", overrides={"out_dir": str(out), "iterations": iterations, "sft_episodes": 4,
                                             "sft_steps": 4, "num_tasks": 2, "group_size": 2, "eval_episodes": 4,
                                             "eval_every": 0, "checkpoint_every": 1, "progress": False})


def train_killed_between_row_and_checkpoint(tmp: Path) -> str:
    from hiergym.training.trainer import Trainer

    out = tmp / "train1"
    save = Trainer.save_checkpoint

    def killed(self):
        if self.state["iteration"] == 2:
            raise KeyboardInterrupt
        return save(self)

    Trainer.save_checkpoint = killed
    try:
        Trainer(_train_config(out, 3)).run()
    except KeyboardInterrupt:
        pass
    finally:
        Trainer.save_checkpoint = save
    Trainer(_train_config(out, 3), resume=True).run()
    iterations = [r["iteration"] for r in _lines(out / "metrics.jsonl") if r["phase"] == "rl"]
    return "recovered" if iterations == [1, 2, 3] else f"rows {iterations}"


def train_killed_between_renames(tmp: Path) -> str:
    from hiergym.training.trainer import Trainer

    out = tmp / "train2"
    Trainer(_train_config(out, 2)).run()
    (out / "checkpoint").rename(out / "checkpoint.old")
    (out / "checkpoint.tmp").mkdir()
    resumed = Trainer(_train_config(out, 2), resume=True)
    return "recovered" if resumed.state["iteration"] == 2 else "started over"


def train_damaged_checkpoint(tmp: Path) -> str:
    from hiergym.training.trainer import CheckpointError, Trainer

    out = tmp / "train3"
    Trainer(_train_config(out, 1)).run()
    weights = out / "checkpoint" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    try:
        Trainer(_train_config(out, 1), resume=True)
    except CheckpointError:
        return "reported"
    return "silently used"


# ------------------------------------------------------------------------------------------ the server
def server_malformed_requests(tmp: Path) -> str:
    from hiergym.envs.webshop.server import make_server

    server = make_server(seed=0, num_products=200, request_timeout=1.0).start()
    host, port = server.httpd.server_address[:2]
    statuses = []
    for method, path, headers, body in (("GET", "/reset?seed=-1", {}, b""),
                                        ("POST", "/act", {"Content-Length": "abc"}, b""),
                                        ("POST", "/act", {"Content-Length": "-1"}, b""),
                                        ("POST", "/act", {"Content-Length": str(10**12)}, b"action=x")):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        statuses.append(connection.getresponse().status)
        connection.close()
    server.stop()
    return "refused" if all(400 <= s < 500 for s in statuses) else f"statuses {statuses}"


FAULTS: dict[str, Callable[[Path], str]] = {
    "eval killed mid-line of results.jsonl": eval_killed_mid_line,
    "two evaluations into one --out": eval_two_writers,
    "eval whose agent failed to load, retried with another": eval_failed_start_then_retry,
    "HTTP 500 for some prompts of a batch": eval_one_request_fails,
    "api_key passed as an agent argument": eval_secret_argument,
    "train killed between a metrics row and its checkpoint": train_killed_between_row_and_checkpoint,
    "train killed between the checkpoint's two renames": train_killed_between_renames,
    "truncated model.safetensors on --resume": train_damaged_checkpoint,
    "malformed WebShop server requests (4 kinds)": server_malformed_requests,
}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    print(f"{'fault':<58} {'outcome':<12} seconds")
    good = 0
    with tempfile.TemporaryDirectory() as directory:
        for name, inject in FAULTS.items():
            tmp = Path(directory) / inject.__name__
            tmp.mkdir()
            started = time.perf_counter()
            try:
                outcome = inject(tmp)
            except Exception as exc:  # noqa: BLE001 - a crash is an outcome to report
                outcome = f"crashed: {type(exc).__name__}: {exc}"[:80]
            good += outcome in ("recovered", "refused", "reported")
            print(f"{name:<58} {outcome:<12} {time.perf_counter() - started:6.1f}", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(FAULTS)} faults injected, {good} recovered, refused or reported with one clear line")


if __name__ == "__main__":
    main()
