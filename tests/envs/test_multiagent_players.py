"""Scripted players and game rules: perfect tic-tac-toe, the Kuhn equilibrium, negotiation scoring."""

from __future__ import annotations

import numpy as np
import pytest

from hiergym.envs.multiagent import household_coop_v0, kuhn_poker_v0, negotiation_v0, tictactoe_v0
from hiergym.envs.multiagent.evaluate import evaluate, play_game
from hiergym.envs.multiagent.household_world import GoalPart
from hiergym.envs.multiagent.players import (
    KuhnEquilibriumPlayer,
    RandomPlayer,
    TicTacToeExpert,
    TicTacToeOrderedExpert,
    TimeDependentNegotiator,
    make_player,
)


# ---------------------------------------------------------------------------------------- tic-tac-toe
def test_minimax_values() -> None:
    assert tictactoe_v0.minimax_value("." * 9) == 0, "tic-tac-toe is a draw under perfect play"
    # X to move with two in a row on the top line wins at once
    assert tictactoe_v0.minimax_value("xx.oo....") == 1
    assert tictactoe_v0.optimal_moves("xx.oo....") == ["c1"]
    # O to move must block X's fork threat: every optimal move keeps the draw
    board = "x...o...x"
    assert tictactoe_v0.minimax_value(board) == 0
    assert set(tictactoe_v0.optimal_moves(board)) == {"b1", "a2", "c2", "b3"}


def test_perfect_tictactoe_never_loses_to_random() -> None:
    result = evaluate("tictactoe_v0", "expert", "random", num_games=120, seed=0)
    assert result.losses == 0
    assert result.win_rate > 0.6, "perfect play should beat a random player most of the time"


def test_perfect_tictactoe_against_itself_always_draws() -> None:
    result = evaluate("tictactoe_v0", "expert", "expert", num_games=30, seed=0)
    assert result.draws == 30


def test_expert_never_loses_from_eval_out_openings_it_can_hold() -> None:
    # from a random two-ply opening the expert still never loses when the position is not already lost
    for seed in range(20):
        env = tictactoe_v0.raw_env()
        env.reset(seed=seed, options={"split": "eval_out"})
        board = env.game.board
        value_for_x = tictactoe_v0.minimax_value(board)  # X is to move after a two-ply opening
        totals, _ = play_game(tictactoe_v0, {"player_0": "expert", "player_1": "random"}, seed,
                              options={"split": "eval_out"})
        assert totals["player_0"] >= min(value_for_x, 0)


def test_ordered_expert_is_perfect_and_a_function_of_the_board() -> None:
    player = TicTacToeOrderedExpert(seed=0)
    assert player.act("", {"board": "." * 9}) == "b2", "the centre first"
    # O after X's corner: only the centre draws
    assert player.act("", {"board": "x........"}) == "b2"
    # among the four optimal edge replies to the diagonal fork threat, the first edge of its order
    assert player.act("", {"board": "x...o...x"}) == "b1"
    # every board it can face: the same move whatever its seed, and always an optimal one
    boards = {"." * 9}
    frontier = ["." * 9]
    while frontier:
        board = frontier.pop()
        if tictactoe_v0.winner_mark(board) or "." not in board:
            continue
        mark = tictactoe_v0.mark_to_move(board)
        for i, c in enumerate(board):
            child = board[:i] + mark + board[i + 1:]
            if c == "." and child not in boards:
                boards.add(child)
                frontier.append(child)
    live = [b for b in boards if not tictactoe_v0.winner_mark(b) and "." in b]
    other = TicTacToeOrderedExpert(seed=123)
    for board in live:
        move = player.act("", {"board": board})
        assert move == other.act("", {"board": board})
        assert move in tictactoe_v0.optimal_moves(board)
    assert evaluate("tictactoe_v0", "ordered", "expert", num_games=20, seed=0).draws == 20
    assert evaluate("tictactoe_v0", "ordered", "random", num_games=60, seed=0).losses == 0
    assert isinstance(make_player("tictactoe_v0", "ordered"), TicTacToeOrderedExpert)


# ---------------------------------------------------------------------------------------- Kuhn poker
@pytest.mark.parametrize("alpha", [0.0, 1 / 6, 1 / 3])
def test_kuhn_equilibrium_is_unexploitable(alpha: float) -> None:
    player = KuhnEquilibriumPlayer(alpha=alpha)
    assert kuhn_poker_v0.exploitability(player.strategy) == pytest.approx(0.0, abs=1e-12)
    # the game's value: a best response in the first seat gets -1/18, in the second +1/18
    assert kuhn_poker_v0.best_response_value(player.strategy, True) == pytest.approx(-1 / 18)
    assert kuhn_poker_v0.best_response_value(player.strategy, False) == pytest.approx(1 / 18)


def test_non_equilibrium_strategies_are_exploitable() -> None:
    def always_bet(card: str, history: str, first: bool) -> dict[str, float]:
        return {"bet": 1.0, "check": 0.0} if history in ("", "c") else {"call": 1.0, "fold": 0.0}

    def uniform(card: str, history: str, first: bool) -> dict[str, float]:
        legal = kuhn_poker_v0.legal_in_history(history)
        return dict.fromkeys(legal, 1 / len(legal))

    assert kuhn_poker_v0.exploitability(always_bet) > 0.1
    assert kuhn_poker_v0.exploitability(uniform) > 0.1
    with pytest.raises(ValueError, match="alpha"):
        KuhnEquilibriumPlayer(alpha=0.5)


def test_kuhn_best_response_matches_simulation() -> None:
    # the exact best-response value against "always check / fold to bets" is checked by brute force play
    def passive(card: str, history: str, first: bool) -> dict[str, float]:
        return {"check": 1.0, "bet": 0.0} if history in ("", "c") else {"fold": 1.0, "call": 0.0}

    # against a player that always checks and folds, betting always wins the ante: +1 in either seat
    assert kuhn_poker_v0.best_response_value(passive, True) == pytest.approx(1.0)
    assert kuhn_poker_v0.best_response_value(passive, False) == pytest.approx(1.0)


def test_kuhn_equilibrium_player_follows_its_strategy() -> None:
    player = KuhnEquilibriumPlayer(alpha=1 / 6, seed=0)
    info = {"to_move": True, "card": "J", "history": "", "first_to_act": True}
    bets = sum(player.act("", info) == "bet" for _ in range(3000))
    assert bets / 3000 == pytest.approx(1 / 6, abs=0.03)
    assert player.act("", {**info, "card": "K", "history": "b", "first_to_act": False}) == "call"
    assert player.act("", {**info, "card": "J", "history": "b", "first_to_act": False}) == "fold"


def test_kuhn_hand_payoffs() -> None:
    assert kuhn_poker_v0.hand_payoff("cc", "K", "J") == 1
    assert kuhn_poker_v0.hand_payoff("bk", "J", "Q") == -2
    assert kuhn_poker_v0.hand_payoff("bf", "J", "K") == 1
    assert kuhn_poker_v0.hand_payoff("cbf", "K", "J") == -1
    assert kuhn_poker_v0.hand_payoff("cbk", "Q", "J") == 2


def test_kuhn_match_alternates_the_first_mover() -> None:
    env = kuhn_poker_v0.raw_env(num_hands=4)
    env.reset(seed=0)
    firsts = []
    for _ in range(4):
        firsts.append(env.agent_selection)
        env.step("check")
        env.step("check")
    assert firsts == ["player_0", "player_1", "player_0", "player_1"]
    assert env.game.is_over() and sum(env.game.scores().values()) == 0


# ---------------------------------------------------------------------------------------- negotiation
def hand_built_negotiation() -> negotiation_v0.NegotiationGame:
    game = negotiation_v0.NegotiationGame(max_turns=6)
    game.pool = {"book": 3, "hat": 1, "ball": 2}
    game.values = {"player_0": {"book": 2, "hat": 4, "ball": 0}, "player_1": {"book": 1, "hat": 1, "ball": 3}}
    game._shares = negotiation_v0.all_shares(game.pool)
    game._proposals = [negotiation_v0.format_proposal(x, tuple(game.pool)) for x in game._shares]
    return game


def test_negotiation_scores_hand_built_deals() -> None:
    game = hand_built_negotiation()
    game.apply({"player_0": game.parse_action("player_0", "propose[book=3, hat=1, ball=0]")})
    assert game.offer_for("player_1") == {"book": 0, "hat": 0, "ball": 2}
    game.apply({"player_1": game.parse_action("player_1", "accept")})
    assert game.outcome == "deal"
    assert game.scores() == {"player_0": 10.0, "player_1": 6.0}
    assert game.won("player_0") and game.won("player_1")

    game = hand_built_negotiation()
    game.apply({"player_0": game.parse_action("player_0", "propose[hat=1]")})
    game.apply({"player_1": game.parse_action("player_1", "propose[ 3 books , ball: 2 ]")})
    assert game.offer_by == "player_1" and game.offer == {"book": 3, "hat": 0, "ball": 2}
    game.apply({"player_0": game.parse_action("player_0", "ACCEPT")})
    assert game.scores() == {"player_0": 4.0, "player_1": 9.0}
    assert not game.won("player_0") and game.won("player_1")


def test_negotiation_walk_away_and_deadline_give_nothing() -> None:
    game = hand_built_negotiation()
    game.apply({"player_0": game.parse_action("player_0", "propose[book=1, hat=1, ball=1]")})
    game.apply({"player_1": game.parse_action("player_1", "walk away")})
    assert game.outcome == "walk away" and game.scores() == {"player_0": 0.0, "player_1": 0.0}

    game = hand_built_negotiation()
    for _ in range(6):
        speaker = game.to_move()[0]
        game.apply({speaker: game.parse_action(speaker, "say[no way]")})
    assert game.outcome == "deadline" and game.scores() == {"player_0": 0.0, "player_1": 0.0}


def test_negotiation_rejects_bad_proposals() -> None:
    game = hand_built_negotiation()
    for bad in ["propose[book=4]", "propose[unicorn=1]", "propose[book=1, book=2]", "propose book=1",
                "accept", "say[]", "say[" + "a" * 400 + "]", "propose[book=-1]"]:
        assert game.parse_action("player_0", bad) is None, bad
    assert game.parse_action("player_1", "propose[book=1]") is None, "not player_1's turn"


def test_generated_pools_keep_their_promises() -> None:
    for split in ("train", "eval_out"):
        for seed in range(30):
            pool, values = negotiation_v0.generate_pool(np.random.default_rng(seed), split)
            assert len(pool) == (4 if split == "eval_out" else 3)
            for v in values:
                assert negotiation_v0.value_of(pool, v) == negotiation_v0.TOTAL_VALUE
            assert all(values[0][i] + values[1][i] > 0 for i in pool)
            assert any(negotiation_v0.value_of(s, values[0]) >= 6
                       and negotiation_v0.value_of(negotiation_v0._rest(pool, s), values[1]) >= 6
                       for s in negotiation_v0.all_shares(pool))
            if split == "eval_out":
                assert set(pool) & set(negotiation_v0.HELD_OUT_ITEMS)
            else:
                assert not set(pool) & set(negotiation_v0.HELD_OUT_ITEMS)


def test_time_dependent_negotiator_concedes_over_time() -> None:
    negotiator = TimeDependentNegotiator(e=1.0, floor=5)
    assert negotiator.aspiration(0, 10, 10) == 10
    assert negotiator.aspiration(9, 10, 10) == 5
    assert negotiator.aspiration(0, 10, 10) > negotiator.aspiration(5, 10, 10) > 5
    info = {"to_move": True, "pool": {"book": 3, "hat": 1, "ball": 2}, "values": {"book": 2, "hat": 4, "ball": 0},
            "turn": 9, "max_turns": 10, "offer": {"book": 2, "hat": 0, "ball": 2}, "offer_by": "player_1",
            "admissible_actions": ["accept"]}
    assert negotiator.act("", {**info, "offer": {"book": 1, "hat": 1, "ball": 0}}) == "accept"  # worth 6 >= 5
    assert negotiator.act("", info).startswith("propose[")  # worth 4 < 5: counter-offer


# ---------------------------------------------------------------------------------------- household
def test_household_expert_team_always_succeeds() -> None:
    for split in ("train", "eval_out"):
        result = evaluate("household_coop_v0", "expert", "expert", num_games=10, seed=0, split=split)
        assert result.success_rate == 1.0, split
    # alone (teammate random), the helpful expert still does both parts in time nearly always
    assert evaluate("household_coop_v0", "expert", "random", num_games=10, seed=0).success_rate >= 0.8


def test_household_searcher_finds_what_it_cannot_see() -> None:
    # two searchers (no binding to the game: they know only their info and feedback) do the joint goal
    for split in ("train", "eval_out"):
        result = evaluate("household_coop_v0", "searcher", "searcher", num_games=20, seed=0, split=split,
                          max_rounds=30)
        assert result.success_rate == 1.0, split
    # its moves: a goal object it sees is taken, a closed receptacle opened, else the next receptacle in order
    searcher = make_player("household_coop_v0", "searcher", seed=0)
    task = "put a clean apple in fridge and put a mug in cabinet"
    assert household_coop_v0.goal_parts(task) == [GoalPart("apple", "clean", "fridge"), GoalPart("mug", None, "cabinet")]
    walk = ["go to cabinet 1", "go to countertop 1", "go to sinkbasin 1", "go to fridge 1", "look", "inventory"]
    here = {"task": task, "location": "", "holding": ""}
    assert searcher.act("", {**here, "admissible_actions": walk}) == "go to cabinet 1"
    at_cabinet = {**here, "location": "cabinet 1", "admissible_actions": ["open cabinet 1", *walk[1:]]}
    assert searcher.act("", at_cabinet) == "open cabinet 1"
    opened = {**at_cabinet, "admissible_actions": ["close cabinet 1", "take egg 1 from cabinet 1",
                                                   "take apple 2 from cabinet 1", *walk[1:]]}
    assert searcher.act("", opened) == "take apple 2 from cabinet 1"
    empty = {**at_cabinet, "admissible_actions": ["close cabinet 1", *walk[1:]]}
    assert searcher.act("", empty) == "go to countertop 1", "the next place where loose objects start"
    # carrying the apple: the sink first (it is not clean yet), then, once cleaned, the fridge
    carrying = {**here, "location": "countertop 1", "holding": "apple 2", "admissible_actions": walk[:1] + walk[2:]}
    assert searcher.act("", carrying) == "go to sinkbasin 1"
    at_sink = {**carrying, "location": "sinkbasin 1",
               "admissible_actions": ["clean apple 2 with sinkbasin 1", *walk[:2], *walk[3:]]}
    assert searcher.act("", at_sink) == "clean apple 2 with sinkbasin 1"
    assert searcher.act("Nothing happens.", at_sink) == "clean apple 2 with sinkbasin 1", "a failed clean is retried"
    assert searcher.act("You clean the apple 2 using the sinkbasin 1.", at_sink) == "go to fridge 1"
    # an object the sink cannot clean (no clean command admissible) is put down, never taken as cleaned
    stuck = make_player("household_coop_v0", "searcher")
    no_clean = {**at_sink, "admissible_actions": ["move apple 2 to sinkbasin 1", *walk[:2], *walk[3:]]}
    assert stuck.act("", no_clean) == "move apple 2 to sinkbasin 1"
    assert stuck._given == {} and stuck._pending is None
    # a room without the appliance the state needs: put it down where it stands
    no_sink = {**carrying, "admissible_actions": ["move apple 2 to countertop 1", *walk[:1], walk[3]]}
    assert make_player("household_coop_v0", "searcher").act("", no_sink) == "move apple 2 to countertop 1"
    # an apple already in the fridge is not taken again: on to the next place (the order is cyclic)
    in_fridge = {**here, "location": "fridge 1", "admissible_actions": ["take apple 1 from fridge 1", *walk[:3]]}
    assert make_player("household_coop_v0", "searcher").act("", in_fridge) == "go to sinkbasin 1"
    at_last = {**here, "location": "sinkbasin 1", "admissible_actions": walk[:2] + walk[3:]}
    assert make_player("household_coop_v0", "searcher").act("", at_last) == "go to cabinet 1"


def test_household_split_goal_needs_both_agents() -> None:
    env = household_coop_v0.raw_env(goal_visibility="split")
    env.reset(seed=1)
    game = env.game
    assert game.task("player_0") != game.task("player_1")
    # a team where player_1 only waits: player_0's own part alone never completes the joint goal
    expert = make_player("household_coop_v0", "expert")
    expert.bind_game(game)
    from hiergym.envs.multiagent.household_world import expert_commands

    for _ in range(30):
        part = game.my_part("player_0")
        commands = expert_commands(game.world, "player_0", part)
        env.step(commands[0] if commands else "wait")
        env.step("wait")
    assert game.world.holds(game.my_part("player_0")) and not game.success()


def test_random_player_picks_admissible_actions() -> None:
    player = RandomPlayer(seed=3)
    assert player.act("", {"admissible_actions": ["a", "b"]}) in {"a", "b"}
    assert player.act("", {"admissible_actions": []}) == ""
    assert isinstance(make_player("tictactoe_v0", "expert"), TicTacToeExpert)
    with pytest.raises(ValueError, match="choose one of"):
        make_player("tictactoe_v0", "grandmaster")
    with pytest.raises(ValueError, match="unknown game"):
        make_player("chess_v6", "random")


def test_alfworld_household_goals_name_appliances_the_room_has() -> None:
    from hiergym.envs.multiagent.household_world import STATE_APPLIANCE, generate_alfworld_world

    for seed in range(300):
        world, parts = generate_alfworld_world(np.random.default_rng(seed), ("player_0", "player_1"), "train")
        kinds = {world.kind(r) for r in world.receptacles}
        for part in parts:
            assert part.state is None or STATE_APPLIANCE[part.state] in kinds, (seed, part)


def test_alfworld_household_redraws_a_room_in_a_loop_and_names_an_impossible_goal(monkeypatch) -> None:
    """A goal that fits no room ends in a one-line ValueError after MAX_ROOM_DRAWS rooms (it used to recurse
    until Python's recursion limit); a room that does not fit is drawn again from the same generator."""
    from hiergym.envs.multiagent import household_world

    monkeypatch.setattr(household_world, "MAX_ROOM_DRAWS", 20)
    with pytest.raises(ValueError, match="fits a goal of 40 parts in 20 draws; use fewer parts"):
        household_world.generate_alfworld_world(np.random.default_rng(0), ("player_0", "player_1"), "train", 40)
    draws = []
    real = household_world._draw_alfworld_world
    monkeypatch.setattr(household_world, "_draw_alfworld_world",
                        lambda *a: draws.append(1) or (None if len(draws) < 3 else real(*a)))
    world, parts = household_world.generate_alfworld_world(np.random.default_rng(0), ("player_0", "player_1"),
                                                           "train")
    assert len(draws) == 3 and len(parts) == 2


def test_household_on_the_alfworld_generator() -> None:
    from hiergym.envs.alfworld import world as alfworld
    from hiergym.envs.multiagent.household_world import generate_alfworld_world

    for split in ("train", "eval_out"):
        result = evaluate("household_coop_v0", "expert", "expert", num_games=8, seed=0, split=split, world="alfworld")
        assert result.success_rate == 1.0, split
    for seed in range(15):
        world, parts = generate_alfworld_world(np.random.default_rng(seed), ("player_0", "player_1"), "train")
        assert len({p.kind for p in parts}) == 2 and not any(world.holds(p) for p in parts)
        for part in parts:
            assert world.of_kind(part.target), "the target receptacle type exists in the room"
            assert any(world.kind(o) == part.kind for objs in world.contents.values() for o in objs)
        # ALFWorld's rules carry over: objects only go where ALFWorld lets them
        assert world.accepts is not None
    env = household_coop_v0.raw_env(world="alfworld")
    for split in ("train", "eval_out"):
        for seed in range(5):
            env.reset(seed=seed, options={"split": split})
            scene = int(env.game.world.origin.split(":")[1])
            assert (scene in alfworld.HELD_OUT_SCENES) == (split == "eval_out")
    with pytest.raises(ValueError, match="world"):
        household_coop_v0.raw_env(world="minecraft")
