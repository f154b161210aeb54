"""``hiergym serve webshop``: the WebShop environment as HTML pages on localhost, for a person to click through.

The pages are drawn from the same elements as the agent's text observation (:mod:`pages`), and every button
posts the very action an agent would send (``click[...]`` / ``search[...]``) to the same environment, so the
browser and the text view share one state: ``/text`` shows what the agent reads at this moment.

Routes: ``GET /`` the current page; ``POST /act`` (form field ``action``, or ``kind=search`` and ``query``) takes
a step; ``GET /reset?seed=N&split=S&task_id=K`` starts a new task; ``GET /text`` the text observation and the
admissible actions; ``GET /state`` the same as JSON.

It is a tool for looking at the environment on one's own machine (it binds to 127.0.0.1 by default), not a web
service, but it holds up to what a browser or a confused script may send: every malformed request gets a 4xx
answer with its reason (a bad ``seed``, a missing, non-numeric or negative ``Content-Length``, a body over
:data:`MAX_BODY_BYTES` (413), a body that is not UTF-8 form data, an unknown method (405), a cross-origin form
post or reset (403)); reads time out (``request_timeout``, 408 for a body that does not arrive in time); each connection
has its own daemon thread, so a slow client holds only its own; every response carries
``X-Content-Type-Options: nosniff``, and text from a request is HTML-escaped wherever it is shown.

This module imports only the standard library at import time (the CLI loads it to build its parser); the
environment loads when the server starts.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

SERVABLE = ("webshop",)
SPLITS = ("train", "eval_in", "eval_out")  # hiergym.envs.core.SPLITS (not imported: this module stays light)
#: Largest request body read (a form with one action or query; an action is at most 4,096 characters).
MAX_BODY_BYTES = 16 * 1024
#: Seconds a client may stay silent while sending a request, and may take to send a whole body.
REQUEST_TIMEOUT_S = 10.0
_DIGITS = re.compile(r"[0-9]{1,20}")
_FORM = "application/x-www-form-urlencoded"


class RequestError(Exception):
    """A request the server refuses: answered with ``status`` and ``reason`` (text/plain)."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def shown(value: str, limit: int = 60) -> str:
    """A value from a request as it may appear in an answer: truncated, quoted, control characters escaped
    (``repr``) and HTML-escaped, so it is inert in a terminal and in any page."""
    return html.escape(repr(value[:limit] + ("..." if len(value) > limit else "")))


def _non_negative(name: str, value: str) -> int:
    if not _DIGITS.fullmatch(value) or int(value) >= 2**64:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be a whole number from 0 to 2**64-1, got {shown(value)}")
    return int(value)


def reset_arguments(query: str) -> dict[str, Any]:
    """``seed``, ``split`` and ``task_id`` of ``/reset?...``, checked; raises :class:`RequestError`."""
    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=8)
    except ValueError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "too many query parameters; /reset takes seed, split and "
                           "task_id") from None
    unknown = sorted(set(params) - {"seed", "split", "task_id"})
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown parameter {shown(unknown[0])}; /reset takes seed, "
                           "split and task_id")
    repeated = [k for k, v in params.items() if len(v) > 1]
    if repeated:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{repeated[0]} is given more than once")
    values = {k: v[0] for k, v in params.items()}
    split = values.get("split")
    if split is not None and split not in SPLITS:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown split {shown(split)}; choose one of {', '.join(SPLITS)}")
    return {"seed": _non_negative("seed", values["seed"]) if "seed" in values else None,
            "split": split,
            "task_id": _non_negative("task_id", values["task_id"]) if "task_id" in values else None}


def safe_json(value: Any) -> str:
    """JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes: the same data, inert if a page embeds it."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _terminal(text: str, limit: int = 300) -> str:
    """Text from a request as the terminal echo shows it: control characters (escape sequences) escaped."""
    text = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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
        self._echo(f"> {_terminal(action)}")

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


def make_handler(session: WebShopSession, *, request_timeout: float = REQUEST_TIMEOUT_S,
                 max_body_bytes: int = MAX_BODY_BYTES) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hiergym-webshop"
        sys_version = ""
        default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line and headers
        #: the connection's socket timeout (``StreamRequestHandler.setup``): no read waits longer
        timeout = request_timeout
        _refused = False

        def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for the text view
            pass

        def _send(self, body: str, content_type: str = "text/html; charset=utf-8",
                  status: HTTPStatus = HTTPStatus.OK, headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            for name, value in headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)

        def _refuse(self, status: HTTPStatus, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._refused = True
            self._send(f"{status.value} {status.phrase}: {reason}\n", "text/plain; charset=utf-8", status, headers)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # http.server's own refusals (bad request line, URI or headers too long, ...), in the same form
            if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method
                self._not_allowed()
                return
            status = HTTPStatus(code)
            self._refuse(status, html.escape(message or status.description))

        def finish(self) -> None:
            super().finish()  # the answer is flushed
            if self._refused:  # read what the client already sent, so closing does not reset the connection
                _drain(self.connection)

        def _redirect(self) -> None:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()

        def _answer(self, route: Any) -> None:
            try:
                route()
            except RequestError as exc:
                self._refuse(exc.status, exc.reason)
            except (TimeoutError, ConnectionError):
                self.close_connection = True
            except Exception:  # a bug, not the client's fault: say so, and keep serving
                traceback.print_exc(file=sys.stderr)
                self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "the environment raised an error (see the "
                             "server's terminal)")

        def _same_origin(self) -> None:
            """Refuse what another site's page makes a browser send (a form post or link to localhost)."""
            origin = self.headers.get("Origin")
            cross_origin = origin is not None and urlparse(origin).netloc != (self.headers.get("Host") or "")
            if cross_origin or self.headers.get("Sec-Fetch-Site") == "cross-site":
                raise RequestError(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(self._get)

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self._post)

        def _not_allowed(self) -> None:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not served; use GET or POST /act",
                         (("Allow", "GET, POST"),))

        do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_CONNECT = do_TRACE = _not_allowed  # noqa: N815

        def _get(self) -> None:
            url = urlparse(self.path)
            if url.path == "/":
                self._send(session.html())
            elif url.path == "/text":
                state = session.state()
                self._send(f"{state['observation']}\n\nadmissible actions: {', '.join(state['admissible_actions'])}"
                           f"\n{session.status()}\n", "text/plain; charset=utf-8")
            elif url.path == "/state":
                self._send(safe_json(session.state()), "application/json")
            elif url.path == "/reset":
                self._same_origin()
                arguments = reset_arguments(url.query)
                try:
                    session.reset(**arguments)
                except ValueError as exc:  # the environment's own refusal of these options
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"bad reset: {html.escape(str(exc)[:300])}") from None
                self._redirect()
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, "not found; try / /text /state /reset")

        def _body(self) -> bytes:
            """The request body, checked against its headers, read within ``request_timeout``."""
            if self.headers.get("Transfer-Encoding") is not None:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length (chunked "
                                   "bodies are not read)")
            lengths = self.headers.get_all("Content-Length") or []
            if not lengths:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length header")
            if len(set(lengths)) > 1:
                raise RequestError(HTTPStatus.BAD_REQUEST, "conflicting Content-Length headers")
            if not _DIGITS.fullmatch(lengths[0].strip()):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length must be a non-negative whole number, "
                                   f"got {shown(lengths[0])}")
            length = int(lengths[0])
            if length > max_body_bytes:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is {length} bytes; at most "
                                   f"{max_body_bytes} are read")
            content_type = (self.headers.get("Content-Type") or _FORM).split(";")[0].strip().lower()
            if content_type != _FORM:
                raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the form as {_FORM}")
            deadline = time.monotonic() + request_timeout
            chunks, received = [], 0
            try:
                while received < length:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(left)
                    chunk = self.rfile.read1(length - received)
                    if not chunk:
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {received} of {length} "
                                           "bytes")
                    chunks.append(chunk)
                    received += len(chunk)
            except TimeoutError:
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"{received} of {length} body bytes arrived in "
                                   f"{request_timeout:g} s") from None
            finally:
                self.connection.settimeout(request_timeout)
            return b"".join(chunks)

        def _post(self) -> None:
            if urlparse(self.path).path != "/act":
                raise RequestError(HTTPStatus.NOT_FOUND, "not found; POST to /act")
            self._same_origin()
            body = self._body()
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8,
                                errors="strict")
            except UnicodeDecodeError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "the form is not UTF-8") from None
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "too many form fields") from None
            if form.get("kind", [""])[0] == "search":
                if "query" not in form:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "a search needs the form field query")
                action = f"search[{form['query'][0]}]"
            elif "action" in form:
                action = form["action"][0]
            else:
                raise RequestError(HTTPStatus.BAD_REQUEST, "the form needs a field action (or kind=search and "
                                   "query)")
            session.step(action)
            self._redirect()

    return Handler


def _drain(connection: socket.socket, limit: int = 1 << 18, seconds: float = 0.5) -> None:
    """After a refusal: end our side, then discard what the client sends for a moment.

    Closing a socket with unread data makes the kernel send a reset, which can destroy the answer before the
    client reads it (a client still sending the body of a refused request, say); this is the usual
    "lingering close", bounded in bytes and time.
    """
    try:
        connection.shutdown(socket.SHUT_WR)
        deadline, received = time.monotonic() + seconds, 0
        while received < limit and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += len(chunk)
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a connection's thread never keeps the process alive, nor stop() waiting
    request_queue_size = 64


class WebShopServer:
    """An HTTP server for one session; ``port=0`` picks a free port (see :attr:`url`).

    ``request_timeout`` (seconds) bounds every read from a client and the time to send a body;
    ``max_body_bytes`` is the largest body read (larger ones get 413).
    """

    def __init__(self, session: WebShopSession, host: str = "127.0.0.1", port: int = 0, *,
                 request_timeout: float = REQUEST_TIMEOUT_S, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.session = session
        self.httpd = _HTTPServer((host, port), make_handler(session, request_timeout=request_timeout,
                                                            max_body_bytes=max_body_bytes))
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
                echo: bool = False, *, request_timeout: float = REQUEST_TIMEOUT_S,
                max_body_bytes: int = MAX_BODY_BYTES, **env_kwargs: Any) -> WebShopServer:
    """A server on a fresh ``hiergym/WebShop-v0`` (with its time limit); call ``.start()`` to serve."""
    import gymnasium as gym

    import hiergym  # noqa: F401  (registers the environments)

    env = gym.make("hiergym/WebShop-v0", **env_kwargs)
    return WebShopServer(WebShopSession(env, seed=seed, split=split, echo=echo), host=host, port=port,
                         request_timeout=request_timeout, max_body_bytes=max_body_bytes)


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


def check_address(host: str, port: int) -> None:
    """A clear ``ValueError`` for a port out of range, a host that is no address, or an address this machine
    cannot listen on (in use, not ours), before any work is done."""
    import socket

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is out of range: give 0-65535 (0 picks a free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"--host {host!r} is not an address or a name this machine resolves (e.g. 127.0.0.1, "
                         "localhost)") from None
    family, _, _, _, address = infos[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind(address)
    except OSError as exc:
        reason = "is already in use (another server? pick another --port, or 0 for a free one)" \
            if exc.errno in (98, 48) else f"cannot be listened on ({exc.strerror})"
        raise ValueError(f"{host}:{port} {reason}") from None
    finally:
        probe.close()


def run_serve(args: argparse.Namespace) -> int:
    from hiergym.registration import parse_env_args

    check_address(args.host, args.port)
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
