"""Parse and validate scenario YAML into frozen dataclasses (the only module that imports yaml)."""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from .draws import Uniform
from .errors import ScenarioError, ScenarioIssue
from .spec import KEY_PATTERN, KINDS, MODELS, Kind, Msg

TaskType = Kind
Progress = Literal["time", "polls", "manual"]
Envelope = Literal["documented", "compat"]
ENVELOPES: tuple[Envelope, ...] = ("documented", "compat")
OUTCOMES = ("success", "failed")
KEY_RE = re.compile(KEY_PATTERN)
FAULT_STATUSES = frozenset({400, 403, 408, 409, 429, 500, 502, 503, 504})
LOST_STATUSES = frozenset({500, 502, 503, 504})  # what a gateway answers when it loses the service's answer
ROUTES = ("create", "query", "files", "any")

DEFAULT_FAILURE_MESSAGE = Msg.GENERATION_FAILED


# --- values -----------------------------------------------------------------------------------

_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


@dataclass(frozen=True, slots=True)
class Duration:
    """A fixed duration (lo == hi) or a uniform range, in seconds."""

    lo: float
    hi: float

    def sample(self, rng: Uniform) -> float:
        return self.lo if self.lo == self.hi else rng.uniform(self.lo, self.hi)

    def __str__(self) -> str:
        return f"{self.lo:g}" if self.lo == self.hi else f"{self.lo:g}..{self.hi:g}"


def _seconds(text: str) -> float:
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text[:40]!r} is not a duration (use seconds, or '500ms', '2s', '1.5m', '1h')")
    return _bounded_seconds(float(m.group(1)) * _UNIT[m.group(2) or "s"], text)


def _bounded_seconds(seconds: float, given: object) -> float:
    if not 0 <= seconds <= MAX_SECONDS:  # NaN fails this too
        shown = given[:40] if isinstance(given, str) else given
        raise ValueError(f"{shown!r} is not a duration from 0 to ten years ({MAX_SECONDS} seconds)")
    return seconds


def parse_duration(value: object) -> Duration:
    """Seconds as a number, a string with a unit ('500ms', '2s', '1m'), or a range 'a..b'."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = _bounded_seconds(float(value), value)
        return Duration(seconds, seconds)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    if ".." in value:
        lo_text, _, hi_text = value.partition("..")
        lo, hi = _seconds(lo_text), _seconds(hi_text)
        if lo > hi:
            raise ValueError(f"range {value!r} has its minimum above its maximum")
        return Duration(lo, hi)
    s = _seconds(value)
    return Duration(s, s)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A fixed outcome or weighted choice between success and failed (weights in percent)."""

    weights: tuple[tuple[str, float], ...]

    def pick(self, rng: Uniform) -> str:
        if len(self.weights) == 1:
            return self.weights[0][0]
        x = rng.uniform(0, 100)
        acc = 0.0
        for name, weight in self.weights:
            acc += weight
            if x < acc:
                return name
        return self.weights[-1][0]

    def __str__(self) -> str:
        if len(self.weights) == 1:
            return self.weights[0][0]
        return ", ".join(f"{n} {w:g}%" for n, w in self.weights)


def parse_outcome(value: object) -> Outcome:
    """'success', 'failed', or percent weights like {success: 90, failed: 10} summing to 100."""
    if isinstance(value, str):
        if value not in OUTCOMES:
            raise ValueError(f"{value!r} is not an outcome (use 'success' or 'failed')")
        return Outcome(((value, 100.0),))
    if isinstance(value, Mapping):
        weights: list[tuple[str, float]] = []
        for name, weight in value.items():
            if name not in OUTCOMES:
                raise ValueError(f"{name!r} is not an outcome (use 'success' or 'failed')")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, not {weight!r}")
            if weight > 0:
                weights.append((name, float(weight)))
        total = sum(w for _, w in weights)
        if abs(total - 100) > 1e-9:
            raise ValueError(f"outcome weights must add up to 100 (percent); these add up to {total:g}")
        return Outcome(tuple(weights))
    raise ValueError(f"{value!r} is not an outcome (use 'success', 'failed' or weights)")


# --- the scenario ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model_id: str
    task_type: TaskType
    cost: int
    queued: Duration | None = None
    running: Duration | None = None


DEFAULT_MODELS: dict[str, ModelSpec] = {m.model_id: ModelSpec(m.model_id, m.task_type, m.cost) for m in MODELS.values()}


@dataclass(frozen=True, slots=True)
class AccountSpec:
    key: str
    credits: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a task behaves; in a rule, None means 'as the defaults say'."""

    queued: Duration | None = None
    running: Duration | None = None
    outcome: Outcome | None = None
    failure_message: str | None = None
    progress: Progress | None = None
    polls: tuple[int, int] | None = None  # polls seen at status 1, then at status 2
    cost: int | None = None
    reject: str | None = None
    results: Literal["local", "cdn"] | None = None
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """Conditions on a request; every condition given must hold. Counters count matching requests."""

    route: str = "any"
    model_ids: frozenset[str] | None = None
    prompt_contains: tuple[str, ...] | None = None
    prompt_regex: Pattern | None = None
    keys: frozenset[str] | None = None
    accounts: frozenset[str] | None = None
    aspect_ratios: frozenset[str] | None = None
    has_images: bool | None = None
    every_nth: int | None = None
    first_n: int | None = None
    after_n: int | None = None
    count_per: Literal["global", "key"] = "global"
    probability: float | None = None
    # Derived once (matching runs on every submit): whether counters apply, whether the request's body matters.
    counted: bool = field(init=False, repr=False, compare=False)
    on_body: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counted = self.every_nth is not None or self.first_n is not None or self.after_n is not None
        object.__setattr__(self, "counted", counted)
        on_body = (
            self.model_ids is not None or self.prompt_contains is not None or self.prompt_regex is not None
            or self.aspect_ratios is not None or self.has_images is not None
        )  # fmt: skip
        object.__setattr__(self, "on_body", on_body)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    behaviour: Behaviour


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_seconds: float  # the window: 1 for per_second, 60 for per_minute
    limit: int
    burst: int


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    match: Match
    latency: Duration | None = None
    status: int | None = None
    retry_after: int | None = None
    body: Any = None
    truncate: bool = False
    close: bool = False
    rate_limit: RateLimit | None = None
    # The request is handled (a create makes and charges its task), then its answer is lost:
    # "close" cuts the connection mid-answer, a status is a gateway's 5xx in its place.
    lose_answer: int | Literal["close"] | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt_length: int = 4000
    max_image_urls: int = 8


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the emulated world's starting state and behaviour."""

    name: str
    description: str = ""
    source: str = ""
    path: str | None = None
    seed: int | None = None
    clock: Literal["real", "manual"] = "real"
    # "compat" also copies the task's fields to the top level of the contract's answers (README, Known clients).
    envelope: Envelope = "documented"
    start_time: float | None = None
    auth_mode: Literal["open", "strict"] = "open"
    default_credits: int = 1000
    accounts: tuple[AccountSpec, ...] = ()
    models: Mapping[str, ModelSpec] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    defaults: Behaviour = Behaviour(
        queued=Duration(0.5, 0.5),
        running=Duration(2.0, 2.0),
        outcome=Outcome((("success", 100.0),)),
        failure_message=DEFAULT_FAILURE_MESSAGE,
        progress="time",
        polls=(1, 1),
        results="local",
    )
    rules: tuple[Rule, ...] = ()
    faults: tuple[Fault, ...] = ()
    cdn_base: str | None = None
    limits: Limits = Limits()


# --- loading -----------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]

# The cost bounds of a scenario document (README "Limits"): every entry point (validate, serve
# --scenario, --watch, PUT /_mock/scenario) goes through parse_scenario, and so through these.
MAX_SCENARIO_BYTES = 256 * 1024  # about a second of PyYAML's work here (libyaml parses, Python builds)
MAX_YAML_DEPTH = 32  # nested mappings and lists; the scenario format itself needs 5
MAX_YAML_NODES = 50_000  # values once aliases are expanded (each use of an alias counts its whole content)
MAX_INT = 2**53 - 1  # the largest integer a JSON reader in JavaScript (the dashboard) reads exactly
MAX_SECONDS = 10 * 365 * 86_400  # the longest duration, as for POST /_mock/clock/advance
MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can show
_INT_TEXT = 80  # characters of an integer literal (a 53-bit one in binary with its 0b is 55)


class _Refused(Exception):
    """A value the bounded loader will not build: where it is and what to change."""

    def __init__(self, mark: yaml.Mark | None, message: str, path: Path_ | None = None) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.at = (mark.line, mark.column) if mark is not None else None
        self.message = message
        self.path = path  # known while composing; found from ``at`` while constructing


_Loader: Any = yaml.SafeLoader
try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml: its pure-Python parser
    pass
else:

    class _LibyamlLoader(yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """SafeLoader's parts, with libyaml's parser under Python's composer (so that composing can be
        bounded node by node): five times as fast as the pure-Python parser."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _Loader = _LibyamlLoader


class _BoundedLoader(_Loader):
    """A safe loader that refuses, while composing, nesting past MAX_YAML_DEPTH, documents that expand
    (aliases included) past MAX_YAML_NODES values and recursive aliases; and, while constructing,
    integers past MAX_INT, infinite or NaN floats, and binary or set values (no JSON form)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._sizes: dict[int, int] = {}  # id(node) -> how many values it holds once expanded
        self._path: list[str | int] = []  # the key path of the value being composed, for errors

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # ``index`` is the key's node for a mapping's value, the position for a list's item, else None.
        step = index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else None
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)  # type: ignore[attr-defined]
            if target is not None and id(target) not in self._sizes:
                raise _Refused(
                    event.start_mark,
                    f"alias *{event.anchor} is used inside the value it names (a recursive structure): "
                    "a scenario must be a tree; copy the value instead",
                    self._here(step),
                )
            return super().compose_node(parent, index)
        if len(self._path) >= MAX_YAML_DEPTH:
            raise _Refused(
                self.peek_event().start_mark,
                _TOO_DEEP,
                self._here(step),
            )
        self._path.append(step if step is not None else "?")
        node = super().compose_node(parent, index)
        self._path.pop()
        assert node is not None  # (None is only for an empty document, never composed here)
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(v)] for v in node.value)
        else:
            size = 1
        if size > MAX_YAML_NODES:
            raise _Refused(
                node.start_mark,
                f"this value expands to more than {MAX_YAML_NODES} values (each use of an alias counts "
                "all it names): use fewer or smaller aliases, or split the scenario",
                self._here(step),
            )
        self._sizes[id(node)] = size
        return node

    def _here(self, step: str | int | None) -> Path_:
        return tuple(self._path[1:]) + ((step,) if step is not None else ())  # [0] is the document itself

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > _INT_TEXT:  # before int(): no long, slow conversion of a huge literal
            raise _Refused(node.start_mark, f"integer {node.value[:20]}… is out of range {_INT_RANGE}")
        value: int = super().construct_yaml_int(node)
        if not -MAX_INT <= value <= MAX_INT:
            raise _Refused(node.start_mark, f"integer {node.value[:20]} is out of range {_INT_RANGE}")
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(node.start_mark, f"{node.value[:20]!r} is not a finite number: use a finite one")
        return value

    def construct_no_json(self, node: yaml.Node) -> Any:
        kind = node.tag.rpartition(":")[2]
        raise _Refused(node.start_mark, f"{kind} values are not supported: use a string, a list or a mapping")


_TOO_DEEP = f"nested deeper than {MAX_YAML_DEPTH} levels of mappings and lists: flatten this value"
_INT_RANGE = f"(integers are at most {MAX_INT:,} either side of 0)".replace(",", "_")
# PyYAML looks constructors up in this table, not by method name.
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)
for _tag in ("binary", "set", "omap", "pairs"):
    _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _BoundedLoader.construct_no_json)


def _compose(text: str) -> yaml.Node | None:
    """The document's node graph, bounded (``_Refused``, or yaml.YAMLError for what is not YAML)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


def _construct(node: yaml.Node) -> Any:
    loader = _BoundedLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _line_map(node: yaml.Node) -> dict[Path_, int]:
    """Map every key path in the document to the 1-based line where its value starts.

    A node reached again through an alias is not walked again: its paths name the alias's key."""
    lines: dict[Path_, int] = {}
    seen: set[int] = set()

    def walk(n: yaml.Node, path: Path_) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    walk(node, ())
    return lines


def _duplicate_keys(node: yaml.Node) -> Iterable[tuple[Path_, int]]:
    seen: set[int] = set()

    def walk(n: yaml.Node, path: Path_) -> Iterable[tuple[Path_, int]]:
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            keys: set[str] = set()
            for k, v in n.value:
                key = getattr(k, "value", None)
                if isinstance(key, str):
                    if key in keys:
                        yield (*path, key), k.start_mark.line + 1
                    keys.add(key)
                yield from walk(v, (*path, str(key)))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                yield from walk(v, (*path, i))

    return list(walk(node, ()))


class _Reader:
    """Walks the parsed document collecting every issue with its line and key path."""

    def __init__(self, file: str, lines: dict[Path_, int]) -> None:
        self.file = file
        self.lines = lines
        self.issues: list[ScenarioIssue] = []

    def issue(self, path: Path_, message: str) -> None:
        p = path
        while p and p not in self.lines:
            p = p[:-1]
        self.issues.append(ScenarioIssue(self.file, self.lines.get(p), _dotted(path), message))

    def mapping(self, value: object, path: Path_, allowed: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.issue(path, f"must be a mapping, not {type(value).__name__}")
            return {}
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.issue((*path, str(key)), f"unknown key {key!r} (allowed: {hint})")
        return {k: v for k, v in value.items() if k in allowed}

    def convert(self, m: Mapping[str, Any], key: str, path: Path_, parse: Any) -> Any:
        if key not in m:
            return None
        try:
            return parse(m[key])
        except ValueError as exc:
            self.issue((*path, key), str(exc))
            return None

    def integer(self, m: Mapping[str, Any], key: str, path: Path_, minimum: int = 0) -> int | None:
        def parse(v: object) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"must be an integer, not {v!r}")
            if not minimum <= v <= MAX_INT:
                raise ValueError(f"must be from {minimum} to {MAX_INT}, not {v}")
            return v

        return self.convert(m, key, path, parse)

    def string(self, m: Mapping[str, Any], key: str, path: Path_, choices: Iterable[str] = ()) -> Any:
        choices = tuple(choices)

        def parse(v: object) -> str:
            if not isinstance(v, str):
                raise ValueError(f"must be a string, not {v!r}")
            if choices and v not in choices:
                raise ValueError(f"{v!r} is not one of: {', '.join(choices)}")
            return v

        return self.convert(m, key, path, parse)

    def strings(self, m: Mapping[str, Any], key: str, path: Path_) -> tuple[str, ...] | None:
        def parse(v: object) -> tuple[str, ...]:
            items = [v] if isinstance(v, str) else v
            if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
                raise ValueError(f"must be a string or a non-empty list of strings, not {v!r}")
            return tuple(items)

        return self.convert(m, key, path, parse)

    def boolean(self, m: Mapping[str, Any], key: str, path: Path_) -> bool | None:
        def parse(v: object) -> bool:
            if not isinstance(v, bool):
                raise ValueError(f"must be true or false, not {v!r}")
            return v

        return self.convert(m, key, path, parse)

    def sequence(self, value: object, path: Path_, what: str) -> list[Any]:
        """A section's list of items (none when empty or absent); anything else is an issue, and no items."""
        if not value:
            return []
        if not isinstance(value, list):
            self.issue(path, f"must be a list of {what}")
            return []
        return value


def _parse_key(v: object) -> str:
    if not isinstance(v, str) or not KEY_RE.fullmatch(v):
        raise ValueError(f"{v!r} is not an API key (sk- followed by 32 letters or digits)")
    return v


def _parse_keys(v: object) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise ValueError(f"must be an API key or a non-empty list of them, not {v!r}")
    return tuple(_parse_key(k) for k in items)


class Pattern(Protocol):
    """A compiled prompt_regex: RE2's, so matching takes time linear in the prompt, whatever the pattern."""

    pattern: str

    def search(self, text: str) -> object: ...


def _parse_regex(v: object) -> Pattern:
    if not isinstance(v, str):
        raise ValueError(f"must be a regular expression string, not {v!r}")
    import re2  # google-re2, imported only by scenarios that use it: a server without one stays as lean

    options = re2.Options()
    options.log_errors = False  # the error comes back in the exception; RE2 would also print it to stderr
    try:
        return re2.compile(v, options)  # type: ignore[no-any-return]
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"{v[:80]!r} is not a regular expression RE2 accepts ({reason}): prompt_regex uses RE2 syntax, "
            "which has no backreferences or lookaround (it matches in linear time)"
        ) from None


def _parse_instant(v: object) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a time")
    if isinstance(v, int | float):
        return _bounded_instant(float(v), v)
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        v = _dt.datetime(v.year, v.month, v.day)
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{v!r} is not a time (use Unix seconds or ISO 8601)") from None
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.UTC)
        return _bounded_instant(v.timestamp(), v)
    raise ValueError(f"{v!r} is not a time (use Unix seconds or ISO 8601)")


def _bounded_instant(seconds: float, given: object) -> float:
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError(f"{given!r} is not a time from 1970 to the end of 9999 (0 to {MAX_TIME} Unix seconds)")
    return seconds


def _json_value(v: object, where: str = "") -> None:
    """Refuse (ValueError naming the place) what has no JSON form: it is sent in answers and saved in state."""
    if v is None or isinstance(v, bool | int | float):
        return  # the loader already refused integers past MAX_INT and infinite or NaN floats
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where or 'the value'} has a lone surrogate, which UTF-8 cannot carry") from None
        return
    if isinstance(v, list):
        for i, item in enumerate(v):
            _json_value(item, f"{where}[{i}]")
        return
    if isinstance(v, dict):
        for key, item in v.items():
            if not isinstance(key, str):
                raise ValueError(f"{where or 'the mapping'} has the key {key!r}: keys must be strings (quote it)")
            _json_value(item, f"{where}.{key}" if where else key)
        return
    what = "a date" if isinstance(v, _dt.date) else type(v).__name__
    raise ValueError(f"{where or 'the value'} is {what} ({v!r}), which JSON has not: quote it to make it a string")


_MATCH_KEYS = (
    "route", "model_id", "prompt_contains", "prompt_regex", "key", "account", "aspect_ratio",
    "has_images", "every_nth", "first_n", "after_n", "count_per", "probability",
)  # fmt: skip
_BEHAVIOUR_KEYS = (
    "queued", "running", "outcome", "failure_message", "progress", "polls", "cost", "reject",
    "results", "extra",
)  # fmt: skip


def _read_match(r: _Reader, value: object, path: Path_, models: Mapping[str, ModelSpec]) -> Match:
    m = r.mapping(value, path, _MATCH_KEYS)
    model_ids = r.strings(m, "model_id", path)
    for mid in model_ids or ():
        if mid not in models:
            r.issue((*path, "model_id"), f"unknown model {mid!r} (known: {', '.join(models)})")

    def probability(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise ValueError(f"must be a number from 0 to 1, not {v!r}")
        return float(v)

    keys = r.convert(m, "key", path, _parse_keys)
    as_set = lambda xs: frozenset(xs) if xs is not None else None  # noqa: E731
    return Match(
        route=r.string(m, "route", path, ROUTES) or "any",
        model_ids=as_set(model_ids),
        prompt_contains=r.strings(m, "prompt_contains", path),
        prompt_regex=r.convert(m, "prompt_regex", path, _parse_regex),
        keys=as_set(keys),
        accounts=as_set(r.strings(m, "account", path)),
        aspect_ratios=as_set(r.strings(m, "aspect_ratio", path)),
        has_images=r.boolean(m, "has_images", path),
        every_nth=r.integer(m, "every_nth", path, 1),
        first_n=r.integer(m, "first_n", path, 1),
        after_n=r.integer(m, "after_n", path, 0),
        count_per=r.string(m, "count_per", path, ("global", "key")) or "global",
        probability=r.convert(m, "probability", path, probability),
    )


def _read_behaviour(r: _Reader, m: Mapping[str, Any], path: Path_, in_rule: bool) -> Behaviour:
    def polls(v: object) -> tuple[int, int]:
        if not isinstance(v, dict) or set(v) - {"queued", "running"}:
            raise ValueError("must be a mapping with 'queued' and/or 'running' poll counts")
        counts = (v.get("queued", 1), v.get("running", 1))
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"poll counts must be integers >= 0, not {v!r}")
        return counts  # type: ignore[return-value]

    def extra(v: object) -> Mapping[str, Any]:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ValueError("must be a mapping of field names to values")
        _json_value(v)
        return v

    return Behaviour(
        queued=r.convert(m, "queued", path, parse_duration),
        running=r.convert(m, "running", path, parse_duration),
        outcome=r.convert(m, "outcome", path, parse_outcome),
        failure_message=r.string(m, "failure_message", path),
        progress=r.string(m, "progress", path, ("time", "polls", "manual")),
        polls=r.convert(m, "polls", path, polls),
        cost=r.integer(m, "cost", path) if in_rule else None,
        reject=r.string(m, "reject", path) if in_rule else None,
        results=r.string(m, "results", path, ("local", "cdn")),
        extra=r.convert(m, "extra", path, extra) if in_rule else None,
    )


def _read_fault(r: _Reader, value: object, path: Path_, models: Mapping[str, ModelSpec]) -> Fault:
    m = r.mapping(
        value,
        path,
        ("name", "match", "latency", "status", "retry_after", "body", "truncate", "close", "rate_limit", "lose_answer"),
    )

    def status(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v not in FAULT_STATUSES:
            raise ValueError(f"{v!r} is not a fault status (use one of {sorted(FAULT_STATUSES)})")
        return v

    def rate_limit(v: object) -> RateLimit:
        if not isinstance(v, dict) or set(v) - {"per_second", "per_minute", "burst"}:
            raise ValueError("must be a mapping with per_second or per_minute, and optional burst")
        if ("per_second" in v) == ("per_minute" in v):
            raise ValueError("give exactly one of per_second or per_minute")
        limit = v.get("per_second", v.get("per_minute"))
        burst = v.get("burst", limit)
        for x in (limit, burst):
            if isinstance(x, bool) or not isinstance(x, int) or x < 1:
                raise ValueError(f"rate limit numbers must be integers >= 1, not {x!r}")
        assert isinstance(limit, int) and isinstance(burst, int)
        return RateLimit(1.0 if "per_second" in v else 60.0, limit, burst)

    def lose_answer(v: object) -> int | Literal["close"]:
        if v == "close" or (type(v) is int and v in LOST_STATUSES):
            return v  # type: ignore[return-value]
        raise ValueError(f"must be close or one of {sorted(LOST_STATUSES)}, not {v!r}")

    def fault_name(v: object) -> str:
        # It is sent back in the X-Mockgen-Fault header: printable ASCII, no line breaks.
        if not isinstance(v, str) or not 0 < len(v) <= 128 or not all(" " <= c <= "~" for c in v):
            raise ValueError(
                f"{v!r} is not a fault name: use 1 to 128 printable ASCII characters (it is sent in a header)"
            )
        return v

    def body(v: object) -> object:
        _json_value(v)
        return v

    fault = Fault(
        name=r.convert(m, "name", path, fault_name) or f"fault-{path[-1]}",
        match=_read_match(r, m.get("match"), (*path, "match"), models),
        latency=r.convert(m, "latency", path, parse_duration),
        status=r.convert(m, "status", path, status),
        retry_after=r.integer(m, "retry_after", path),
        body=r.convert(m, "body", path, body),
        truncate=bool(r.boolean(m, "truncate", path)),
        close=bool(r.boolean(m, "close", path)),
        rate_limit=r.convert(m, "rate_limit", path, rate_limit),
        lose_answer=r.convert(m, "lose_answer", path, lose_answer),
    )
    lost = fault.lose_answer is not None
    effects = [fault.status is not None, fault.truncate, fault.close, fault.rate_limit is not None, lost]
    if sum(effects) > 1:
        r.issue(path, "a fault does one of: status, truncate, close, rate_limit, lose_answer (latency may join any)")
    if not any(k in m for k in ("latency", "status", "truncate", "close", "rate_limit", "lose_answer")):
        r.issue(path, "a fault needs latency, status, truncate, close, rate_limit or lose_answer")
    return fault


_TOP_KEYS = (
    "name", "description", "seed", "clock", "start_time", "auth", "accounts", "models",
    "defaults", "rules", "faults", "results", "limits", "envelope",
)  # fmt: skip
_RULE_ONLY = ("cost", "reject", "extra")
_DEFAULT = Scenario(name="")


def parse_scenario(text: str, file: str = "<scenario>", *, name: str | None = None) -> Scenario:
    """Parse and validate scenario YAML; raise ScenarioError listing every problem at once.

    Bounded in cost whatever the text: see MAX_SCENARIO_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES.
    Each section has a reader below that notes its issues in ``r`` and goes on, so that one error
    lists them all; the issues come section by section, in the order read here."""
    doc, node, lines = _read_document(text, file)
    r = _Reader(file, lines)
    if node is not None:
        for path, line in _duplicate_keys(node):
            r.issues.append(ScenarioIssue(file, line, ".".join(map(str, path)), "duplicate key"))
    top = r.mapping(doc, (), _TOP_KEYS)
    auth_mode, default_credits = _read_auth(r, top.get("auth"))
    models = _read_models(r, top.get("models"))
    accounts = _read_accounts(r, top.get("accounts"))
    defaults = _read_defaults(r, top.get("defaults"))
    rules = _read_rules(r, top.get("rules"), models)
    faults = _read_faults(r, top.get("faults"), models)
    cdn_base = _read_results(r, top.get("results"))
    limits = _read_limits(r, top.get("limits"))
    seed = _read_seed(r, top.get("seed"))
    scenario_name = r.string(top, "name", ())
    clock, start_time = _read_clock(r, top)
    envelope: Envelope = r.string(top, "envelope", (), ENVELOPES) or "documented"
    if r.issues:
        raise ScenarioError(r.issues)
    return Scenario(
        name=scenario_name or name or Path(file).stem,
        description=str(top.get("description") or "").strip(),
        source=text,
        path=None if file.startswith("<") else file,
        seed=seed,
        clock=clock,
        envelope=envelope,
        start_time=start_time,
        auth_mode=auth_mode,
        default_credits=default_credits,
        accounts=accounts,
        models=models,
        defaults=defaults,
        rules=rules,
        faults=faults,
        cdn_base=cdn_base,
        limits=limits,
    )


def _read_document(text: str, file: str) -> tuple[Any, yaml.Node | None, dict[Path_, int]]:
    """The document's value, its node graph and its line map; ScenarioError for what is too big or not YAML."""
    size = len(text) if len(text) * 4 <= MAX_SCENARIO_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SCENARIO_BYTES:
        message = f"the scenario is {size:,} bytes, over the limit of {MAX_SCENARIO_BYTES:,}: make it smaller"
        raise ScenarioError([ScenarioIssue(file, None, "", message)])
    node: yaml.Node | None = None
    try:
        node = _compose(text)
        lines = _line_map(node) if node is not None else {}
        doc = _construct(node) if node is not None else {}
    except _Refused as exc:
        if exc.path is not None:
            where = _dotted(exc.path)
        else:
            where = _path_to(node, exc.at) if node is not None and exc.at else ""
        raise ScenarioError([ScenarioIssue(file, exc.line, where, exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        if "nesting depth" in str(problem):  # libyaml's own bound (1,000 levels), past ours
            raise ScenarioError([ScenarioIssue(file, line, "", _TOO_DEEP)]) from None
        raise ScenarioError([ScenarioIssue(file, line, "", f"not valid YAML: {problem}")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp like 2024-02-30
        raise ScenarioError([ScenarioIssue(file, None, "", f"not valid YAML: {exc}")]) from None
    return doc, node, lines


def _read_auth(r: _Reader, value: object) -> tuple[Literal["open", "strict"], int]:
    """``auth``: the mode and the credits of an account that open mode makes on first use."""
    auth = r.mapping(value, ("auth",), ("mode", "default_credits"))
    mode: Literal["open", "strict"] = r.string(auth, "mode", ("auth",), ("open", "strict")) or "open"
    return mode, _or(r.integer(auth, "default_credits", ("auth",)), _DEFAULT.default_credits)


def _read_models(r: _Reader, value: object) -> dict[str, ModelSpec]:
    """``models``: the default models, each changed, removed (``false``) or joined by a new one."""
    models: dict[str, ModelSpec] = dict(DEFAULT_MODELS)
    given = value if isinstance(value, dict) else {}
    for mid, spec in r.mapping(value, ("models",), given).items():
        if spec is False:
            models.pop(mid, None)
            continue
        model = _read_model(r, mid, spec, models.get(mid))
        if model is not None:
            models[model.model_id] = model
    if not models:
        r.issue(("models",), "at least one model must stay enabled")
    return models


def _read_model(r: _Reader, mid: str | int, value: object, base: ModelSpec | None) -> ModelSpec | None:
    """One entry of ``models``: a new model needs its task_type; a known one keeps what is not given."""
    p: Path_ = ("models", mid)
    ms = r.mapping(value, p, ("task_type", "cost", "queued", "running"))
    task_type = r.string(ms, "task_type", p, KINDS) or (base.task_type if base else None)
    if task_type is None:
        r.issue(p, "a new model needs task_type: image or video")
        return None
    cost = r.integer(ms, "cost", p)
    return ModelSpec(
        str(mid),
        task_type,
        cost if cost is not None else (base.cost if base else 10),
        r.convert(ms, "queued", p, parse_duration),
        r.convert(ms, "running", p, parse_duration),
    )


def _read_accounts(r: _Reader, value: object) -> tuple[AccountSpec, ...]:
    """``accounts``: listed keys (each once) with their starting credits and an optional name."""
    accounts: list[AccountSpec] = []
    seen_keys: set[str] = set()
    for i, acc in enumerate(r.sequence(value, ("accounts",), "{key, credits, name}")):
        p: Path_ = ("accounts", i)
        am = r.mapping(acc, p, ("key", "credits", "name"))
        key = r.convert(am, "key", p, _parse_key)
        if "key" not in am:
            r.issue(p, "an account needs a key")
        credits = r.integer(am, "credits", p)
        if key in seen_keys:
            r.issue((*p, "key"), f"key {key} is listed twice")
        if key:
            seen_keys.add(key)
            accounts.append(AccountSpec(key, _or(credits, 0), r.string(am, "name", p)))
    return tuple(accounts)


def _read_defaults(r: _Reader, value: object) -> Behaviour:
    """``defaults``: how every task behaves unless a rule says otherwise (what is not given stays built in)."""
    dm = r.mapping(value, ("defaults",), [k for k in _BEHAVIOUR_KEYS if k not in _RULE_ONLY])
    given = _read_behaviour(r, dm, ("defaults",), in_rule=False)
    built_in = _DEFAULT.defaults
    return Behaviour(
        **{
            f: getattr(given, f) if getattr(given, f) is not None else getattr(built_in, f)
            for f in Behaviour.__slots__  # type: ignore[attr-defined]
        }
    )


def _read_rules(r: _Reader, value: object, models: Mapping[str, ModelSpec]) -> tuple[Rule, ...]:
    """``rules``: what a matching submit does instead of the defaults (first match wins)."""
    rules: list[Rule] = []
    for i, raw in enumerate(r.sequence(value, ("rules",), "rules")):
        p: Path_ = ("rules", i)
        rm = r.mapping(raw, p, ("name", "match", *_BEHAVIOUR_KEYS))
        match = _read_match(r, rm.get("match"), (*p, "match"), models)
        if match.route not in ("any", "create"):
            r.issue((*p, "match", "route"), "rules apply to submits; use faults for other routes")
        rules.append(Rule(r.string(rm, "name", p) or f"rule-{i}", match, _read_behaviour(r, rm, p, True)))
    return tuple(rules)


def _read_faults(r: _Reader, value: object, models: Mapping[str, ModelSpec]) -> tuple[Fault, ...]:
    """``faults``: what goes wrong on the wire for matching requests, on any route."""
    return tuple(
        _read_fault(r, raw, ("faults", i), models) for i, raw in enumerate(r.sequence(value, ("faults",), "faults"))
    )


def _read_results(r: _Reader, value: object) -> str | None:
    """``results``: the base URL of result files when a rule says ``results: cdn``."""
    results = r.mapping(value, ("results",), ("cdn_base",))
    cdn_base: str | None = r.string(results, "cdn_base", ("results",))
    return cdn_base


def _read_limits(r: _Reader, value: object) -> Limits:
    """``limits``: the longest prompt and the most image_urls a submit may send."""
    m = r.mapping(value, ("limits",), ("max_prompt_length", "max_image_urls"))
    return Limits(
        r.integer(m, "max_prompt_length", ("limits",), 1) or _DEFAULT.limits.max_prompt_length,
        _or(r.integer(m, "max_image_urls", ("limits",), 0), _DEFAULT.limits.max_image_urls),
    )


def _read_clock(r: _Reader, top: Mapping[str, Any]) -> tuple[Literal["real", "manual"], float | None]:
    """``clock`` and ``start_time``: real or manual, and where a manual clock starts (None: now)."""
    clock: Literal["real", "manual"] = r.string(top, "clock", (), ("real", "manual")) or "real"
    return clock, r.convert(top, "start_time", (), _parse_instant)


def _read_seed(r: _Reader, value: object) -> int | None:
    """``seed``: the random source's seed (None: a fresh one at every start)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    r.issue(("seed",), f"must be an integer, not {value!r}")
    return None


def _dotted(path: Path_) -> str:
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in path).lstrip(".")


def _path_to(root: yaml.Node, at: tuple[int, int]) -> str:
    """The key path of the value that starts at (line, column), for errors found while constructing."""
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while todo:
        n, path = todo.pop()
        if (n.start_mark.line, n.start_mark.column) == at:
            return _dotted(path)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            todo.extend((v, (*path, k.value if isinstance(k, yaml.ScalarNode) else "?")) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            todo.extend((v, (*path, i)) for i, v in enumerate(n.value))
    return ""


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def bundled_dir() -> Path:
    """Where the bundled scenarios live: inside the installed package, or the repo's scenarios/."""
    here = Path(__file__).resolve().parent
    inside = here / "scenarios"
    return inside if inside.is_dir() else here.parent / "scenarios"


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


def load_bundled(name: str) -> Scenario:
    """A bundled scenario by its name, and nothing else (what ``PUT /_mock/scenario {"name"}`` may load:
    a file is loaded only from a path given on the command line)."""
    if name not in bundled_names():
        known = ", ".join(bundled_names())
        shown = name[:80] if isinstance(name, str) else name
        message = f"{shown!r} is not a bundled scenario (bundled: {known}); send other scenarios as YAML"
        raise ScenarioError([ScenarioIssue("<scenario name>", None, "name", message)])
    return load_scenario(bundled_dir() / f"{name}.yaml")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a bundled scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        candidate = bundled_dir() / f"{name_or_path}.yaml"
        if not candidate.exists():
            known = ", ".join(bundled_names())
            raise ScenarioError([ScenarioIssue(str(name_or_path), None, "", f"no such scenario (bundled: {known})")])
        path = candidate
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)  # no more than the limit is ever read
        if len(raw) > MAX_SCENARIO_BYTES:
            message = f"the file is over the limit of {MAX_SCENARIO_BYTES:,} bytes for a scenario: make it smaller"
            raise ScenarioError([ScenarioIssue(str(path), None, "", message)])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([ScenarioIssue(str(path), None, "", f"cannot read: {exc}")]) from None
    return parse_scenario(text, str(path))
