"""`hiergym serve webshop`: the HTML view, driven by a real HTTP client on an ephemeral port."""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from hiergym.cli import build_parser
from hiergym.envs.webshop.server import make_server


@pytest.fixture()
def server(tmp_path):
    srv = make_server(seed=3, port=0, num_products=1500, cache_dir=str(tmp_path)).start()
    yield srv
    srv.stop()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def post(url: str, **fields: str) -> str:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10) as response:
        return response.read().decode()  # the redirect to / is followed


def state(server) -> dict:
    return json.loads(get(server.url + "/state"))


def test_a_person_can_shop_through_the_pages(server) -> None:
    page = get(server.url + "/")
    env = server.session.env.unwrapped
    assert "Instruction:" in page and html.escape(env._goal["instruction_text"]) in page
    assert 'name="query"' in page  # the search box
    assert state(server)["page"] == "search"

    plan = env.expert_plan()
    # the search box posts the words; every other control posts its click[...] action
    page = post(server.url + "/act", kind="search", query=plan[0][len("search["):-1])
    assert state(server)["page"] == "results" and "Total results" in page
    for action in plan[1:]:
        assert html.escape(action, quote=True) in page, action  # the button for the expert's next click
        page = post(server.url + "/act", action=action)
    final = state(server)
    assert final["done"] and final["won"] and final["reward"] == 1.0
    assert "Thank you for shopping with us!" in page and "episode over: reward 1.000" in page


def test_browser_and_text_view_share_one_state(server) -> None:
    post(server.url + "/act", kind="search", query="office chair")
    text = get(server.url + "/text")
    env = server.session.env.unwrapped
    observation = env.render()
    assert text.startswith(observation) and "admissible actions: click[back to search], click[next >]" in text
    assert state(server)["observation"] == observation
    page = get(server.url + "/")
    assert html.escape(observation) in page  # the "what the agent sees" panel
    first_asin = re.search(r"click\[(b0[0-9a-z]{8})\]", text).group(1)
    post(server.url + "/act", action=f"click[{first_asin}]")
    assert state(server)["page"] == "item" and env._state.item == env.catalog.index_of(first_asin)


def test_invalid_actions_and_reset(server) -> None:
    key = state(server)["state_key"]
    page = post(server.url + "/act", action="click[nonsense]")
    assert "last action invalid" in page and state(server)["state_key"] == key
    post(server.url + "/act", kind="search", query="")  # an empty search is invalid, as for an agent
    assert state(server)["action_valid"] is False
    task = state(server)["task"]
    get(server.url + "/reset?seed=11")
    assert state(server)["steps"] == 0 and state(server)["task"] != task
    get(server.url + "/reset?split=eval_out&task_id=0")
    assert server.session.env.unwrapped._goal["query"] in {"natural deodorant", "granola", "women puffer jacket",
                                                           "bluetooth speaker", "table lamp"}
    with pytest.raises(urllib.error.HTTPError) as error:
        get(server.url + "/reset?split=nope")
    assert error.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as error:
        get(server.url + "/missing")
    assert error.value.code == 404


def test_cli_has_the_serve_subcommand() -> None:
    args = build_parser().parse_args(["serve", "webshop", "--seed", "4", "--port", "0"])
    assert args.command == "serve" and args.env == "webshop" and args.seed == 4 and args.port == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "sokoban"])
