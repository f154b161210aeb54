"""The ray backend joins an existing cluster (issue 17): a head started with ``ray start --head`` in a
subprocess, joined by a driver process through ``ray_options={"address": ...}`` and through ``RAY_ADDRESS``;
an address where nothing listens fails at once with one line. Skipped without Ray, or when no head starts here.

The head runs as Ray's own docs recommend for a cluster: token authentication, the token shared by the head and
the drivers (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN``). It is started with ``--block`` and stopped by
terminating that process (what ``ray stop`` does to every Ray process of the machine, done here to this head
only: other Ray instances on a shared machine are left alone)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray backend needs Ray: pip install 'hiergym[ray]'")

HEAD_START_S = 40

#: The driver: the same 4 copies on the cluster, joined by ``address=`` then by ``RAY_ADDRESS``, against the
#: sync backend. The custom resource only the test head has proves the actors ran there.
DRIVER = r"""
import json, os, sys
import ray
from hiergym.envs.vector import make_group_vec

def play(backend, **options):
    with make_group_vec("hiergym/Sokoban-v0", num_tasks=2, group_size=2, seed=3, backend=backend,
                        **({"ray_options": options} if backend == "ray" else {})) as env:
        obs, _ = env.reset()
        out = env.step(["up", "down", "left", "right"])
        played = [list(obs), list(out.observations), out.rewards.tolist(), out.active.tolist()]
        head = ray.cluster_resources().get("hiergym_test_head") if backend == "ray" else None
    if backend == "ray":
        ray.shutdown()
    return played, head

options = {"num_cpus": 0.25, "copies_per_actor": 2, "resources": {"hiergym_test_head": 1}}
result = {"sync": play("sync")[0], "address": play("ray", address=sys.argv[1], **options)}
os.environ["RAY_ADDRESS"] = sys.argv[1]
result["RAY_ADDRESS"] = play("ray", **options)
print("RESULT " + json.dumps(result))
"""

#: A driver without the token: refused, in one line that names the fix.
REFUSED = r"""
import sys
from hiergym.envs.vector.ray_backend import ensure_ray
try:
    ensure_ray(sys.argv[1])
except ValueError as exc:
    print("REFUSED " + str(exc))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str | None:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


@pytest.fixture
def ray_head():
    cli = ray_cli()
    if cli is None:
        pytest.skip("no `ray` command next to this Python")
    port, token = free_port(), uuid.uuid4().hex
    temp = tempfile.mkdtemp(prefix="hgray")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at once on SIGTERM (no 30 s drain)
    env.pop("RAY_ADDRESS", None)
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [cli, "start", "--head", "--port", str(port), "--num-cpus", "1", "--resources", '{"hiergym_test_head": 4}',
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp, "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HEAD_START_S
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.skip(f"`ray start --head` did not come up here: {(Path(temp) / 'head.log').read_text()[-600:]}")
        yield f"127.0.0.1:{port}", env
    finally:
        head.terminate()  # this head only, by its process id
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # the session this test started for it
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def run_driver(code: str, address: str, env: dict, timeout: float = 60) -> str:
    done = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_ray_backend_joins_a_cluster_by_address_and_by_ray_address(ray_head) -> None:
    address, env = ray_head
    out = run_driver(DRIVER, address, env)
    result = json.loads(out[out.index("RESULT ") + 7:].splitlines()[0])
    for how in ("address", "RAY_ADDRESS"):
        played, head = result[how]
        assert head == 4, f"{how}: not on the test head (its resources: {head})"
        assert played == result["sync"], how
    # A driver without the cluster's token is refused, with the fix in the message (Ray's own retries are
    # shortened here: RAY_gcs_server_port_wait_time_s).
    plain = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    out = run_driver(REFUSED, address, {**plain, "RAY_AUTH_MODE": "disabled", "RAY_gcs_server_port_wait_time_s": "1"})
    message = out[out.index("REFUSED "):].splitlines()[0]
    assert address in message and "RAY_AUTH_MODE=token" in message


def test_an_address_where_nothing_listens_fails_at_once(monkeypatch) -> None:
    """Nothing listens on the port: a one-line ValueError from the TCP probe, without ray.init's retries."""
    from hiergym.envs.vector import ray_backend

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be tried"))
    port = free_port()  # bound and released: nothing listens there now
    for how in ("address", "RAY_ADDRESS"):
        started = time.monotonic()
        if how == "RAY_ADDRESS":
            monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        with pytest.raises(ValueError, match=f"127.0.0.1:{port}.*{how}.*nothing accepts connections") as caught:
            ray_backend.ensure_ray(f"127.0.0.1:{port}" if how == "address" else None)
        assert "\n" not in str(caught.value) and time.monotonic() - started < 5
    assert ray_backend.probe_address("auto") is None and ray_backend.probe_address("local") is None
