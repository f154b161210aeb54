"""``hiergym serve webshop`` under malformed, hostile and concurrent requests, over raw sockets and http.client.

The server runs in a thread on 127.0.0.1 with an ephemeral port. Every malformed request must get a 4xx answer
with a reason (never a dropped connection or a handler stuck in a read), and one slow client must not hold
the others.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse

import pytest

from hiergym.envs.webshop.server import MAX_BODY_BYTES, make_server


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("webshop-cache"))


@pytest.fixture()
def server(cache_dir):
    srv = make_server(seed=3, port=0, num_products=1500, cache_dir=cache_dir, request_timeout=20.0).start()
    yield srv
    srv.stop()


def address(server) -> tuple[str, int]:
    return server.httpd.server_address[:2]


def raw(server, data: bytes, *, timeout: float = 10.0, then_wait: bool = False) -> tuple[int, dict[str, str], str]:
    """Send ``data`` as is and read the answer: ``(status, headers, body)``."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(data)
        if not then_wait:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body.decode("utf-8")


def request(server, method: str, path: str, body: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection(*address(server), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def post_act(server, body: bytes, extra: str = "") -> bytes:
    return (b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + extra.encode() + b"\r\n" + body)


def test_bad_reset_arguments_get_400_with_a_reason(server) -> None:
    for query, reason in (("seed=-1", "seed must be a whole number"), ("seed=abc", "seed must be"),
                          ("seed=1e3", "seed must be"), ("task_id=-2", "task_id must be"),
                          (f"seed={2**64}", "seed must be"), ("split=nope", "unknown split"),
                          ("seed=1&seed=2", "more than once"), ("colour=red", "unknown parameter")):
        status, headers, body = request(server, "GET", f"/reset?{query}")
        assert status == 400 and reason in body, (query, status, body)
        assert headers["x-content-type-options"] == "nosniff"
    assert request(server, "GET", "/reset?seed=12")[0] == 303  # still serving, and a good reset works
    assert json.loads(request(server, "GET", "/state")[2])["steps"] == 0


def test_the_reflected_value_is_escaped_and_not_sniffed(server) -> None:
    status, headers, body = request(server, "GET", "/reset?split=" + urllib.parse.quote("<script>alert(1)</script>"))
    assert status == 400 and headers["content-type"].startswith("text/plain")
    assert headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in body and "&lt;script&gt;" in body
    # user text in a page: the search query reaches the state key, never the HTML unescaped
    request(server, "POST", "/act", "kind=search&query=" + urllib.parse.quote("<img src=x onerror=alert(1)>"),
            {"Content-Type": "application/x-www-form-urlencoded"})
    for path in ("/", "/text", "/state"):
        status, headers, page = request(server, "GET", path)
        assert status == 200 and "<img src=x" not in page and headers["x-content-type-options"] == "nosniff"
    assert "query=<img src=x onerror=alert(1)>" in json.loads(page)["state_key"]  # the same data, escaped


@pytest.mark.parametrize(("header", "status", "reason"), [
    ("Content-Length: abc\r\n", 400, "Content-Length must be a non-negative whole number"),
    ("Content-Length: -1\r\n", 400, "Content-Length must be"),
    ("Content-Length: 1.5\r\n", 400, "Content-Length must be"),
    ("Content-Length: 5\r\nContent-Length: 6\r\n", 400, "conflicting Content-Length"),
    ("", 411, "needs a Content-Length"),
    ("Transfer-Encoding: chunked\r\n", 411, "chunked"),
    (f"Content-Length: {10**12}\r\n", 413, "at most"),
    (f"Content-Length: {MAX_BODY_BYTES + 1}\r\n", 413, "at most"),
])
def test_malformed_bodies_are_refused_at_once(server, header: str, status: int, reason: str) -> None:
    start = time.monotonic()
    got, headers, body = raw(server, post_act(server, b"action=click%5Bnext+%3E%5D", header), then_wait=True)
    assert got == status and reason in body, body
    assert headers["x-content-type-options"] == "nosniff"
    assert time.monotonic() - start < 5  # answered, not waiting for a body that will not come


def test_other_refusals(server) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(server, "POST", "/act", "nothing=here", form)[:3:2] == (400, "400 Bad Request: the form needs a "
                                                                                  "field action (or kind=search and query)\n")
    assert request(server, "POST", "/act", b"action=\xff\xfe", form)[0] == 400  # not UTF-8
    assert request(server, "POST", "/act", '{"action": "x"}', {"Content-Type": "application/json"})[0] == 415
    assert request(server, "POST", "/act", "kind=search", form)[0] == 400
    assert request(server, "POST", "/elsewhere", "action=x", form)[0] == 404
    status, headers, _ = request(server, "PUT", "/act", "action=x", form)
    assert status == 405 and headers["allow"] == "GET, POST"
    assert raw(server, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    assert raw(server, b"GARBAGE\r\n\r\n")[0] == 400
    assert raw(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")[0] == 414
    # a form posted from another site's page (a browser sends its Origin) changes nothing
    key = json.loads(request(server, "GET", "/state")[2])["state_key"]
    status, _, body = request(server, "POST", "/act", "kind=search&query=chair",
                              {**form, "Origin": "http://evil.example"})
    assert status == 403 and json.loads(request(server, "GET", "/state")[2])["state_key"] == key
    host = "{}:{}".format(*address(server))
    assert request(server, "GET", "/reset?seed=5", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert request(server, "POST", "/act", "kind=search&query=chair", {**form, "Origin": f"http://{host}"})[0] == 303
    assert json.loads(request(server, "GET", "/state")[2])["page"] == "results"


def test_a_body_that_does_not_arrive_times_out(cache_dir) -> None:
    srv = make_server(seed=0, port=0, num_products=1500, cache_dir=cache_dir, request_timeout=1.0).start()
    try:
        start = time.monotonic()
        status, _, body = raw(srv, post_act(srv, b"action=cl", "Content-Length: 40\r\n"), then_wait=True)
        assert status == 408 and "9 of 40 body bytes" in body and time.monotonic() - start < 5
        # a client trickling a byte at a time cannot stretch the body's deadline
        with socket.create_connection(address(srv), timeout=10) as sock:
            sock.sendall(post_act(srv, b"", "Content-Length: 40\r\n"))
            start = time.monotonic()
            with pytest.raises(OSError):
                for _ in range(40):
                    sock.sendall(b"a")
                    time.sleep(0.2)
            assert time.monotonic() - start < 5
        assert request(srv, "GET", "/state")[0] == 200
    finally:
        srv.stop()


def test_a_slow_client_does_not_hold_the_server(server) -> None:
    """8 threads x 25 requests while another client holds a half-sent body, all within a bound."""
    slow = socket.create_connection(address(server), timeout=30)
    slow.sendall(post_act(server, b"action=click", "Content-Length: 1000\r\n"))  # 12 of 1000 bytes
    errors: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for i in range(25):
            try:
                if i % 5 == 4:
                    status = request(server, "POST", "/act", f"kind=search&query=chair+{worker}",
                                     {"Content-Type": "application/x-www-form-urlencoded"})[0]
                else:
                    status = request(server, "GET", ("/", "/state", "/text", "/reset?seed=1")[i % 4])[0]
            except Exception as exc:  # noqa: BLE001  (collected and reported below)
                with lock:
                    errors.append(repr(exc))
                return
            with lock:
                statuses.append(status)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - start
    try:
        assert not errors, errors[:3]
        assert len(statuses) == 200 and set(statuses) <= {200, 303}
        assert elapsed < 30, f"200 requests took {elapsed:.1f}s"
        slow.sendall(b"x" * 10)  # the slow client is still connected, still waiting for its answer
    finally:
        slow.close()
    assert request(server, "GET", "/state")[0] == 200
