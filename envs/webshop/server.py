"""``hiergym serve webshop``: the WebShop environment as HTML pages on localhost, for a person to click through.

The pages are drawn from the same elements as the agent's text observation (:mod:`pages`), and every button
posts the very action an agent would send (``click[...]`` / ``search[...]``) to the same environment, so the
browser and the text view share one state: ``/text`` shows what the agent reads at this moment.

Routes: ``GET /`` the current page; ``POST /act`` (form field ``action``, or ``kind=search`` and ``query``) takes
a step; ``GET /reset?seed=N&split=S&task_id=K`` starts a new task; ``GET /text`` the text observation and the
admissible actions; ``GET /state`` the same as JSON.

This module imports only the standard library at import time (the CLI loads it to build its parser); the
environment loads when the server starts.
"""

from __future__ import annotations

import argparse
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

SERVABLE = ("webshop",)


class WebShopSession:
    """One environment and its last step, guarded by a lock (the HTTP server answers on several threads)."""

    def __init__(self, env: Any, seed: int | None = 0, split: str = "train", echo: bool = False) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.echo = echo
        self.split = split
        self.total_reward = 0.0
        self.steps = 0
        self.done = False
        self.reset(seed=seed, split=split)

    def reset(self, seed: int | None = None, split: str | None = None, task_id: int | None = None) -> None:
        options: dict[str, Any] = {"split": split or self.split}
        if task_id is not None:
            options["task_id"] = task_id
        with self.lock:
            self.observation, self.info = self.env.reset(seed=seed, options=options)
            self.total_reward, self.steps, self.done = 0.0, 0, False
            self.last_reward = 0.0
        self._echo("reset")

    def step(self, action: str) -> None:
        with self.lock:
            if self.done:
                return
            self.observation, reward, terminated, truncated, self.info = self.env.step(action)
            self.last_action = action
            self.last_reward = float(reward)
            self.total_reward += float(reward)
            self.steps += 1
            self.done = bool(terminated or truncated)
        self._echo(f"> {action}")

    def _echo(self, header: str) -> None:
        if self.echo:
            print(f"{header}\n{self.observation}\n", flush=True)

    def status(self) -> str:
        validity = "" if self.info.get("action_valid", True) else " | last action invalid (nothing happened)"
        end = f" | episode over: reward {self.total_reward:.3f}" if self.done else ""
        return f"step {self.steps}{validity}{end}"

    def html(self) -> str:
        from hiergym.envs.webshop import pages as pg

        unwrapped = self.env.unwrapped
        with self.lock:
            return pg.render_html(unwrapped._elements, observation=self.observation,
                                  admissible=list(self.info.get("admissible_actions") or []), status=self.status())

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"observation": self.observation, "task": self.info["task"],
                    "admissible_actions": self.info["admissible_actions"], "won": self.info["won"],
                    "action_valid": self.info["action_valid"], "state_key": self.info["state_key"],
                    "page": self.info.get("page"), "steps": self.steps, "done": self.done,
                    "reward": self.total_reward}


def make_handler(session: WebShopSession) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for the text view
            pass

        def _send(self, body: str, content_type: str = "text/html; charset=utf-8",
                  status: HTTPStatus = HTTPStatus.OK) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _redirect(self) -> None:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/":
                self._send(session.html())
            elif url.path == "/text":
                state = session.state()
                self._send(f"{state['observation']}\n\nadmissible actions: {', '.join(state['admissible_actions'])}"
                           f"\n{session.status()}\n", "text/plain; charset=utf-8")
            elif url.path == "/state":
                self._send(json.dumps(session.state()), "application/json")
            elif url.path == "/reset":
                query = parse_qs(url.query)
                try:
                    seed = int(query["seed"][0]) if "seed" in query else None
                    task_id = int(query["task_id"][0]) if "task_id" in query else None
                    session.reset(seed=seed, split=query.get("split", [None])[0], task_id=task_id)
                except ValueError as exc:
                    self._send(f"bad reset: {exc}", "text/plain; charset=utf-8", HTTPStatus.BAD_REQUEST)
                    return
                self._redirect()
            else:
                self._send("not found; try / /text /state /reset", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/act":
                self._send("not found; POST to /act", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)
                return
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 16)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if form.get("kind", [""])[0] == "search":
                action = f"search[{form.get('query', [''])[0]}]"
            else:
                action = form.get("action", [""])[0]
            session.step(action)
            self._redirect()

    return Handler


class WebShopServer:
    """An HTTP server for one session; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(self, session: WebShopSession, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self.httpd = ThreadingHTTPServer((host, port), make_handler(session))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebShopServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def make_server(seed: int | None = 0, host: str = "127.0.0.1", port: int = 0, split: str = "train",
                echo: bool = False, **env_kwargs: Any) -> WebShopServer:
    """A server on a fresh ``hiergym/WebShop-v0`` (with its time limit); call ``.start()`` to serve."""
    import gymnasium as gym

    import hiergym  # noqa: F401  (registers the environments)

    env = gym.make("hiergym/WebShop-v0", **env_kwargs)
    return WebShopServer(WebShopSession(env, seed=seed, split=split, echo=echo), host=host, port=port)


# --------------------------------------------------------------------------------------------- CLI
def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an environment as web pages on localhost",
        description="Serve an environment as HTML pages a person can click through; the terminal shows the text "
        "observation an agent would read after every step.",
    )
    p.add_argument("env", choices=SERVABLE, help="the environment to serve")
    p.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    p.add_argument("--split", default="train", help="task split: train, eval_in or eval_out")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--env-arg", action="append", metavar="K=V", help="environment argument, repeatable")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from hiergym.registration import parse_env_args

    server = make_server(seed=args.seed, host=args.host, port=args.port, split=args.split, echo=True,
                         **parse_env_args(args.env_arg))
    print(f"serving hiergym/WebShop-v0 on {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
