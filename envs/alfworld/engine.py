"""The native ALFWorld engine: ALFWorld's PDDL domain and text grammar, re-implemented on plain Python state.

It reproduces, for the tasks of :mod:`hiergym.envs.alfworld.world`, what TextWorld's PDDL engine does with
ALFWorld's ``alfred.pddl`` domain and ``alfred.twl2`` grammar: the same feedback strings, the same admissible
commands (sorted, as TextWorld returns them) and the same goal test. ``tests/envs/test_alfworld_differential.py``
checks this against the real engine.

Per-task work (names, "go to" commands, type tables) is done once in :class:`NativeEngine.__init__`; a step
touches only a few lists, so the engine runs tens of thousands of steps per second.
"""

from __future__ import annotations

from hiergym.envs.alfworld.world import LAMP_RECEPTACLES, Receptacle, Task, can_contain

_HEX = "0123456789abcdef"
AT_START = -1  # the agent stands in the middle of the room, at no receptacle
HELD = -1  # obj_loc value of the object in the agent's hands

HELP_TEXT = (
    "Available commands:\n"
    "  look:                             look around your current location\n"
    "  inventory:                        check your current inventory\n"
    "  go to (receptacle):               move to a receptacle\n"
    "  open (receptacle):                open a receptacle\n"
    "  close (receptacle):               close a receptacle\n"
    "  take (object) from (receptacle):  take an object from a receptacle\n"
    "  move (object) to (receptacle):  place an object in or on a receptacle\n"
    "  examine (something):              examine a receptacle or an object\n"
    "  use (object):                     use an object\n"
    "  heat (object) with (receptacle):  heat an object using a receptacle\n"
    "  clean (object) with (receptacle): clean an object using a receptacle\n"
    "  cool (object) with (receptacle):  cool an object using a receptacle\n"
    "  slice (object) with (object):     slice an object using a sharp object\n"
)


def display_list(items: list[str]) -> str:
    """TextWorld's list rendering: "nothing", "a x", "a x, and a y", "a x, a y, and a z"."""
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


_VIEWS: dict[int, tuple] = {}


def _receptacle_view(scene: int, receptacles: tuple[Receptacle, ...]) -> tuple:
    """Per-layout tables (names, "go to" commands, appliance flags, the room view), built once per layout
    (a layout's receptacles are the same in all its tasks; the lists are shared and never mutated)."""
    view = _VIEWS.get(scene)
    if view is None:
        view = _VIEWS[scene] = _build_view(receptacles)
    return view


def _build_view(receptacles: tuple[Receptacle, ...]) -> tuple:
    names = [r.name for r in receptacles]
    types = [r.type for r in receptacles]
    room_view = ("You are in the middle of a room. Looking quickly around you, you see "
                 + display_list(["a " + name for name in names]) + ".")
    return (names, [f"go to {name}" for name in names], types, [t == "Microwave" for t in types],
            [t == "Fridge" for t in types], [t == "SinkBasin" for t in types], room_view)


#: What the scripted expert may know (:meth:`NativeEngine.expert_plan`).
EXPERT_KNOWLEDGE = ("full", "observed")


class NativeEngine:
    """One task's game state and rules. ``step`` returns ``(feedback, valid)``."""

    def __init__(self, task: Task) -> None:
        self.task = task
        recs, objs = task.receptacles, task.objects
        (self.rec_names, self._goto, self._rec_types, self._heater, self._cooler, self._cleaner,
         self._room_view) = _receptacle_view(task.scene, recs)
        self.obj_names = [o.name for o in objs]
        self.obj_labels = ["a " + o.name for o in objs]
        self._obj_types = [o.type for o in objs]
        self._goal_recs = [t == task.recep_type for t in self._rec_types]
        self._goal_objs = [o.type == task.obj_type for o in objs]
        self._goal_obj_indices = [i for i, goal in enumerate(self._goal_objs) if goal]
        self._lamps = [o.toggleable and o.type == task.toggle_type for o in objs]
        self.intro_prefix = "-= Welcome to TextWorld, ALFRED! =-\n\n"
        self.intro_suffix = f"\n\nYour task is to: {task.description}."
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> str:
        task = self.task
        self.agent_at = AT_START
        self.held = HELD  # no object held; object indices are >= 0
        self.opened = [False] * len(task.receptacles)
        self.obj_loc = list(task.placement)
        self.contents: list[list[int]] = [[] for _ in task.receptacles]
        for obj, rec in enumerate(task.placement):  # objects are in id order, so contents stay sorted
            self.contents[rec].append(obj)
        n = len(task.objects)
        self.clean = [False] * n
        self.hot = [False] * n
        self.cool = [False] * n
        self.toggled = [False] * n
        self._invalidate()
        return self.intro_prefix + self._room_view + self.intro_suffix

    def _invalidate(self) -> None:
        """Forget what was derived from the state (commands, key, goal test): the state just changed."""
        self._admissible: list[str] | None = None
        self._commands: dict[str, tuple] | None = None
        self._key: str | None = None
        self._won: bool | None = None

    def state_key(self) -> str:
        if self._key is None:
            flags = "".join(
                _HEX[c + 2 * h + 4 * k + 8 * t]
                for c, h, k, t in zip(self.clean, self.hot, self.cool, self.toggled, strict=True)
            )
            opened = "".join("1" if o else "0" for o in self.opened)
            self._key = (f"{self.task.key}|at{self.agent_at}|h{self.held}|o{opened}"
                         f"|{','.join(map(str, self.obj_loc))}|{flags}")
        return self._key

    # ------------------------------------------------------------------ text
    def _describe(self, rec: int) -> str:
        name = self.rec_names[rec]
        if self.task.receptacles[rec].openable:
            if not self.opened[rec]:
                return f"The {name} is closed."
            return f"The {name} is open. In it, you see {self._listing(rec)}."
        return f"On the {name}, you see {self._listing(rec)}."

    def _listing(self, rec: int) -> str:
        labels = self.obj_labels
        return display_list([labels[o] for o in self.contents[rec]])

    def _examine_object(self, obj: int) -> str:
        name = self.obj_names[obj]
        if self.task.objects[obj].receptacle_object:
            return f"This is a normal {name}. In it, you see nothing."
        clean, hot, cool = self.clean[obj], self.hot[obj], self.cool[obj]
        if clean and hot:
            return f"This is a hot and clean {name}."
        if clean and cool:
            return f"This is a cool and clean {name}."
        if hot:
            return f"This is a hot {name}."
        if clean:
            return f"This is a clean {name}."
        if cool:
            return f"This is a cold {name}."
        if self.task.objects[obj].toggleable and self.toggled[obj]:
            return f"This {name} is on."
        return f"There's nothing special about {name}."

    def look(self) -> str:
        if self.agent_at == AT_START:
            # ALFWorld's grammar lists the receptacles at the agent's location here (the welcome text lists
            # them all): in the middle of the room there are none.
            return "You are in the middle of a room. Looking quickly around you, you see nothing."
        return f"You are facing the {self.rec_names[self.agent_at]}. Next to it, you see nothing."

    # ------------------------------------------------------------------ commands
    def _command_table(self) -> dict[str, tuple]:
        """Every admissible command of the current state, mapped to the operation it performs."""
        if self._commands is not None:
            return self._commands
        table: dict[str, tuple] = {"help": ("help",), "inventory": ("inventory",), "look": ("look",)}
        at = self.agent_at
        for rec, cmd in enumerate(self._goto):
            if rec != at:
                table[cmd] = ("goto", rec)
        held = self.held
        if held != HELD:
            table["examine " + self.obj_names[held]] = ("examine_obj", held)
        if at != AT_START:
            rec_name = self.rec_names[at]
            table["examine " + rec_name] = ("examine_rec", at)
            openable = self.task.receptacles[at].openable
            if openable:
                if self.opened[at]:
                    table["close " + rec_name] = ("close", at)
                else:
                    table["open " + rec_name] = ("open", at)
            accessible = not openable or self.opened[at]
            objects = self.task.objects
            for obj in self.contents[at]:
                if objects[obj].toggleable:
                    table["use " + self.obj_names[obj]] = ("use", obj)
                if accessible and held == HELD and objects[obj].pickupable:
                    table[f"take {self.obj_names[obj]} from {rec_name}"] = ("take", obj, at)
            if held != HELD:
                held_name = self.obj_names[held]
                if accessible and self.fits(at, held):
                    table[f"move {held_name} to {rec_name}"] = ("move", held, at)
                if self._heater[at] and objects[held].heatable:
                    table[f"heat {held_name} with {rec_name}"] = ("heat", held, at)
                if self._cooler[at] and objects[held].coolable:
                    table[f"cool {held_name} with {rec_name}"] = ("cool", held, at)
                if self._cleaner[at] and objects[held].cleanable:
                    table[f"clean {held_name} with {rec_name}"] = ("clean", held, at)
        self._commands = table
        return table

    def fits(self, rec: int, obj: int) -> bool:
        """Whether receptacle ``rec`` can hold object ``obj`` (ALFRED's canContain)."""
        return can_contain(self._rec_types[rec], self._obj_types[obj])

    def admissible_commands(self) -> list[str]:
        if self._admissible is None:
            self._admissible = sorted(self._command_table())
        return self._admissible

    def step(self, command: str) -> tuple[str, bool]:
        """Apply a command (already normalised); unknown or impossible commands change nothing."""
        op = self._command_table().get(command)
        if op is None:
            return "Nothing happens.", False
        kind = op[0]
        feedback: str
        if kind == "goto":
            self.agent_at = op[1]
            feedback = f"You arrive at {self.rec_names[op[1]]}. {self._describe(op[1])}"
        elif kind == "look":
            return self.look(), True  # state unchanged: the command table stays valid
        elif kind == "inventory":
            if self.held == HELD:
                return "You are not carrying anything.", True
            return f"You are carrying: {self.obj_labels[self.held]}.", True
        elif kind == "help":
            return HELP_TEXT, True
        elif kind == "examine_rec":
            return self._describe(op[1]), True
        elif kind == "examine_obj":
            return self._examine_object(op[1]), True
        elif kind == "open":
            self.opened[op[1]] = True
            feedback = f"You open the {self.rec_names[op[1]]}. {self._describe(op[1])}"
        elif kind == "close":
            self.opened[op[1]] = False
            feedback = f"You close the {self.rec_names[op[1]]}."
        elif kind == "take":
            _, obj, rec = op
            self.contents[rec].remove(obj)
            self.obj_loc[obj] = HELD
            self.held = obj
            feedback = f"You pick up the {self.obj_names[obj]} from the {self.rec_names[rec]}."
        elif kind == "move":
            _, obj, rec = op
            contents = self.contents[rec]
            contents.append(obj)
            contents.sort()
            self.obj_loc[obj] = rec
            self.held = HELD
            feedback = f"You move the {self.obj_names[obj]} to the {self.rec_names[rec]}."
        elif kind == "use":
            self.toggled[op[1]] = True
            # The lamp is now toggled whatever it was before: ALFWorld always answers "turn on".
            feedback = f"You turn on the {self.obj_names[op[1]]}."
        elif kind == "heat":
            self.hot[op[1]], self.cool[op[1]] = True, False
            feedback = f"You heat the {self.obj_names[op[1]]} using the {self.rec_names[op[2]]}."
        elif kind == "cool":
            self.cool[op[1]], self.hot[op[1]] = True, False
            feedback = f"You cool the {self.obj_names[op[1]]} using the {self.rec_names[op[2]]}."
        else:  # clean
            self.clean[op[1]] = True
            feedback = f"You clean the {self.obj_names[op[1]]} using the {self.rec_names[op[2]]}."
        self._invalidate()
        return feedback, True

    # ------------------------------------------------------------------ goal
    def won(self) -> bool:
        if self._won is None:
            self._won = self._goal_reached()
        return self._won

    def _goal_reached(self) -> bool:
        task_type = self.task.task_type
        if task_type == "look_at_obj_in_light":
            held = self.held
            if held == HELD or not self._goal_objs[held] or self.agent_at == AT_START:
                return False
            return any(self._lamps[o] and self.toggled[o] for o in self.contents[self.agent_at])
        if task_type == "pick_two_obj_and_place":
            return any(
                self._goal_recs[rec] and sum(self._goal_objs[o] for o in contents) >= 2
                for rec, contents in enumerate(self.contents)
            )
        state = {"pick_clean_then_place_in_recep": self.clean, "pick_heat_then_place_in_recep": self.hot,
                 "pick_cool_then_place_in_recep": self.cool}.get(task_type)
        obj_loc, goal_recs = self.obj_loc, self._goal_recs
        for obj in self._goal_obj_indices:
            rec = obj_loc[obj]
            if rec != HELD and goal_recs[rec] and (state is None or state[obj]):
                return True
        return False

    # ------------------------------------------------------------------ expert
    def expert_plan(self, knowledge: str = "full") -> list[str]:
        """Commands that finish the task from the current state.

        ``knowledge="full"``: a scripted expert that knows where every object is (the shortest plans).
        ``"observed"``: one that uses only what an agent can see: it searches for what it needs in the
        receptacles that can hold it, by type and number from where it stands (:class:`_Searcher`)."""
        if knowledge not in EXPERT_KNOWLEDGE:
            raise ValueError(f"unknown expert knowledge {knowledge!r}; choose one of {', '.join(EXPERT_KNOWLEDGE)}")
        return (_Planner(self) if knowledge == "full" else _Searcher(self)).plan()


class _Planner:
    """Simulates the scripted expert on a copy of the state, so each emitted command is admissible."""

    def __init__(self, engine: NativeEngine) -> None:
        sim = NativeEngine.__new__(NativeEngine)
        sim.__dict__.update(engine.__dict__)
        sim.opened = list(engine.opened)
        sim.obj_loc = list(engine.obj_loc)
        sim.contents = [list(c) for c in engine.contents]
        sim.clean, sim.hot, sim.cool, sim.toggled = (list(engine.clean), list(engine.hot), list(engine.cool),
                                                     list(engine.toggled))
        sim._invalidate()
        self.sim = sim
        self.plan_: list[str] = []

    def do(self, command: str) -> None:
        feedback, valid = self.sim.step(command)
        if not valid:  # a bug in the expert, never in a user's hands
            raise RuntimeError(f"expert command {command!r} is not admissible")
        self.plan_.append(command)

    def go(self, rec: int) -> None:
        if self.sim.agent_at != rec:
            self.do(self.sim._goto[rec])

    def open_here(self) -> None:
        rec = self.sim.agent_at
        if self.sim.task.receptacles[rec].openable and not self.sim.opened[rec]:
            self.do("open " + self.sim.rec_names[rec])

    def take(self, obj: int) -> None:
        sim = self.sim
        if sim.held == obj:
            return
        if sim.held != HELD:
            self.put_away(sim.held)
        rec = sim.obj_loc[obj]
        self.go(rec)
        self.open_here()
        self.do(f"take {sim.obj_names[obj]} from {sim.rec_names[rec]}")

    def put(self, obj: int, rec: int) -> None:
        self.go(rec)
        self.open_here()
        self.do(f"move {self.sim.obj_names[obj]} to {self.sim.rec_names[rec]}")

    def put_away(self, obj: int) -> None:
        """Free the hands: put a useless held object in the current receptacle or the first that fits it."""
        sim = self.sim
        goal_recs = sim._goal_recs
        candidates = [r for r in range(len(sim.rec_names)) if sim.fits(r, obj) and not goal_recs[r]]
        candidates = candidates or [r for r in range(len(sim.rec_names)) if sim.fits(r, obj)]
        rec = sim.agent_at if sim.agent_at in candidates else min(candidates, key=self.rank)
        self.put(obj, rec)

    def rank(self, rec: int) -> tuple:
        """Which of several fitting receptacles comes first: the listing (id) order."""
        return (rec,)

    def first_of(self, kind: str) -> int:
        flags = {"heat": self.sim._heater, "cool": self.sim._cooler, "clean": self.sim._cleaner}[kind]
        return min((r for r, fits in enumerate(flags) if fits), key=self.rank)

    def candidates(self, exclude_rec: int | None = None) -> list[int]:
        """Pickupable goal objects not already in ``exclude_rec``: the held one first, then by name."""
        sim = self.sim
        objs = [o for o, goal in enumerate(sim._goal_objs)
                if goal and sim.task.objects[o].pickupable and (exclude_rec is None or sim.obj_loc[o] != exclude_rec)]
        objs.sort(key=lambda o: (o != sim.held, sim.obj_names[o]))
        return objs

    def goal_object(self, exclude_rec: int | None = None) -> int:
        """The goal object to fetch next."""
        return self.candidates(exclude_rec)[0]

    def lamp(self) -> int:
        return next(o for o, is_lamp in enumerate(self.sim._lamps) if is_lamp)

    def plan(self) -> list[str]:
        sim = self.sim
        task_type = sim.task.task_type
        if sim.won():
            return []
        if task_type == "look_at_obj_in_light":
            obj = self.goal_object()
            self.take(obj)
            lamp = self.lamp()
            self.go(sim.obj_loc[lamp])
            if not sim.won():
                self.do("use " + sim.obj_names[lamp])
        elif task_type == "pick_two_obj_and_place":
            goal_recs = [r for r, goal in enumerate(sim._goal_recs) if goal]
            # The goal receptacle that already holds the most goal objects (the first listed on ties).
            target = min(goal_recs, key=lambda r: (-sum(sim._goal_objs[o] for o in sim.contents[r]), self.rank(r)))
            while not sim.won():
                obj = self.goal_object(exclude_rec=target)
                self.take(obj)
                self.put(obj, target)
        else:
            kind = {"pick_clean_then_place_in_recep": "clean", "pick_heat_then_place_in_recep": "heat",
                    "pick_cool_then_place_in_recep": "cool"}.get(task_type)
            obj = self.goal_object()
            self.take(obj)
            if kind is not None:
                state = {"clean": sim.clean, "heat": sim.hot, "cool": sim.cool}[kind]
                if not state[obj]:
                    device = self.first_of(kind)
                    self.go(device)
                    self.do(f"{kind} {sim.obj_names[obj]} with {sim.rec_names[device]}")
            target = min((r for r, goal in enumerate(sim._goal_recs) if goal), key=self.rank)
            self.put(obj, target)
        if not sim.won():
            raise RuntimeError(f"expert failed on task {sim.task.key}")
        return self.plan_


def _name_order(name: str) -> tuple[str, int]:
    kind, _, number = name.rpartition(" ")
    return (kind, int(number)) if number.isdigit() else (name, 0)


class _Searcher(_Planner):
    """The expert without hidden knowledge: what it fetches it finds by looking.

    It goes through the receptacles that can hold what it needs (the goal object's type, a lamp), by type and
    number, cyclically from the one after where it stands, opening the closed ones, and takes the
    first one it sees. Each command is thus a function of what the agent has observed, which a cloned policy
    can learn; the full-knowledge expert's first "go to" names a receptacle the agent has not seen inside."""

    def rank(self, rec: int) -> tuple:
        return _name_order(self.sim.rec_names[rec])  # "sinkbasin 1" before "sinkbasin 2", whatever the ids

    def _visible(self, rec: int) -> list[int]:
        sim = self.sim
        if rec == AT_START or (sim.task.receptacles[rec].openable and not sim.opened[rec]):
            return []
        return sim.contents[rec]

    def search(self, is_target, may_hold) -> int:
        sim = self.sim
        here = sim.agent_at
        hits = [o for o in self._visible(here) if is_target(o)]
        if hits:
            return hits[0]
        # Receptacles by type, then number ("cabinet 2" before "cabinet 10"): the next one to look in follows
        # from where the agent stands, with no memory of where it has been.
        order = sorted(range(len(sim.rec_names)), key=self.rank)
        if here == AT_START:
            start = 0
        elif sim.task.receptacles[here].openable and not sim.opened[here]:
            start = order.index(here)  # not yet seen inside
        else:
            start = order.index(here) + 1
        for rec in (order[(start + i) % len(order)] for i in range(len(order))):
            if not may_hold(rec):
                continue
            self.go(rec)
            self.open_here()
            hits = [o for o in self._visible(rec) if is_target(o)]
            if hits:
                return hits[0]
        raise LookupError(f"searching expert found nothing on task {sim.task.key}")

    def goal_object(self, exclude_rec: int | None = None) -> int:
        sim = self.sim
        if sim.held != HELD and sim._goal_objs[sim.held]:
            return sim.held
        task, objects, types = sim.task, sim.task.objects, sim._rec_types

        def wanted(o: int) -> bool:
            return sim._goal_objs[o] and objects[o].pickupable and sim.obj_loc[o] != exclude_rec

        try:  # where goal objects start: never in a receptacle of the goal's type
            return self.search(wanted, lambda r: r != exclude_rec and types[r] != task.recep_type
                               and can_contain(types[r], task.obj_type))
        except LookupError:  # a policy put them there (not yet heated, say): look in those too
            return self.search(wanted, lambda r: r != exclude_rec and types[r] == task.recep_type)

    def lamp(self) -> int:
        sim = self.sim
        return self.search(lambda o: sim._lamps[o], lambda r: sim._rec_types[r] in LAMP_RECEPTACLES)
