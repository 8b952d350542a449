"""`slot_init`: the per-request dataclasses' cheaper `__init__` behaves as the one dataclasses generates."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest

from switchman._slots import slot_init
from switchman.gateway import RequestContext
from switchman.gateway._dispatcher import Completion
from switchman.gateway._http import UpstreamRequest
from switchman.gateway._wire import Usage
from switchman.ledger import LedgerRecord
from switchman.routing import CandidateScore, Decision, DecisionContext, PolicyResult, RouteRequest

DECORATED = [LedgerRecord, RequestContext, RouteRequest, CandidateScore, Decision, PolicyResult, DecisionContext,
             Usage, Completion, UpstreamRequest]
_counter = iter(range(10**9))


def _next() -> int:
    return next(_counter)


def _pair() -> tuple[type, type]:
    """The same class twice: as dataclasses builds it, and with slot_init."""

    def build() -> type:
        @dataclass(frozen=True, slots=True)
        class Sample:
            need: int
            also: str
            plain: float = 1.5
            listed: list[int] = field(default_factory=list)
            counted: int = field(default_factory=_next)
            named: str | None = field(default=None, kw_only=True)
            must: int = field(kw_only=True)
            made: tuple[int, ...] = field(default_factory=tuple, kw_only=True)

        return Sample

    return build(), slot_init(build())


def _outcome(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    try:
        made = cls(*args, **kwargs)
    except TypeError as exc:
        return ("TypeError", str(exc))
    return {f.name: getattr(made, f.name) for f in dataclasses.fields(made)}


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1, "a"), {"must": 2}),
    ((1, "a", 2.5, [3]), {"must": 2, "named": "n", "made": (1,)}),
    ((), {"need": 1, "also": "a", "must": 2, "plain": 0.0, "listed": [], "counted": 7}),
    ((1,), {"must": 2}),  # a required argument missing
    ((1, "a"), {}),  # a required keyword-only one missing
    ((1, "a", 2.5, [], 3, "x"), {"must": 2}),  # too many positional
    ((1, "a"), {"must": 2, "other": 3}),  # unknown keyword
    ((1, "a"), {"must": 2, "need": 3}),  # given twice
])
def test_same_values_and_errors_as_dataclasses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    plain, fast = _pair()
    want, got = _outcome(plain, args, kwargs), _outcome(fast, args, kwargs)
    if isinstance(want, dict) and isinstance(got, dict):  # the factory counter moved on between the two
        want.pop("counted"), got.pop("counted")
    assert got == want


def test_factories_run_per_instance_and_the_class_stays_frozen() -> None:
    _, fast = _pair()
    one, two = fast(1, "a", must=2), fast(1, "a", must=2)
    assert one.listed == [] and one.listed is not two.listed
    assert two.counted == one.counted + 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.plain = 2.0
    assert one != two and fast(1, "a", counted=5, must=2) == fast(1, "a", counted=5, must=2)
    assert hash(fast(1, "a", counted=5, must=2, listed=None)) == hash(fast(1, "a", counted=5, must=2, listed=None))
    assert dataclasses.replace(one, need=9).need == 9
    assert "Sample(need=1, also='a', plain=1.5" in repr(one)


def _shape(cls: type) -> list[tuple[str, object, str]]:
    return [(p.name, p.kind, repr(p.default)) for p in inspect.signature(cls).parameters.values()]


def _undecorated(cls: type) -> type:
    """`cls` rebuilt by dataclasses alone, from its own fields."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    spec = [(f.name, f.type, field(default=f.default, default_factory=f.default_factory, kw_only=f.kw_only))
            for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, spec, frozen=params.frozen, slots=True)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_each_per_request_class_keeps_its_signature(cls: type) -> None:
    assert "_set0" in cls.__init__.__globals__  # the fast __init__ is in place
    assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
    assert _shape(cls) == _shape(_undecorated(cls))


def test_a_ledger_record_is_what_it_was() -> None:
    plain = _undecorated(LedgerRecord)
    values = {"time": 1.0, "request_id": "r", "route": "default", "model": "small", "candidates": ("a", "b"),
              "cost_usd": 1e-6, "tags": ("t",), "scores": (("a", None, 1e-6),), "escalated": True}
    record = LedgerRecord(**values)
    assert dataclasses.asdict(record) == dataclasses.asdict(plain(**values))
    assert pickle.loads(pickle.dumps(record)) == record
    fresh = LedgerRecord()
    assert len(fresh.request_id) == 32 and fresh.time > 0 and fresh.request_id != LedgerRecord().request_id
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        LedgerRecord(1.0)  # type: ignore[misc]


def test_refuses_what_it_does_not_reproduce() -> None:
    @dataclass(frozen=True, slots=True)
    class Later:
        x: int = 0

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Hidden:
        x: int = field(default=0, init=False)

    @dataclass(frozen=True)
    class Unslotted:
        x: int = 0

    for cls in (Later, Hidden, Unslotted):
        with pytest.raises(TypeError, match="slot_init"):
            slot_init(cls)


def test_a_field_named_as_the_init_s_own_names_is_refused() -> None:
    """Such a field, a parameter of the generated `__init__`, would shadow its helper (e.g. `_FACTORY`: the
    factory never runs and the sentinel is stored) or not compile (`self`)."""
    for name in ("self", "_FACTORY", "_set1", "_make0", "_default2", "_cls", "_twin", "_object_setattr"):
        cls = dataclasses.make_dataclass("Odd", [("a", int), (name, list, field(default_factory=list))],
                                         frozen=True, slots=True)
        with pytest.raises(TypeError, match="slot_init uses this name"):
            slot_init(cls)


def test_a_subclass_of_a_slotted_dataclass_gets_its_base_fields() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        x: int = 0

    def build() -> type:
        @dataclass(frozen=True, slots=True)
        class Sub(Base):
            y: list[int] = field(default_factory=list)

        return Sub

    plain, fast = build(), slot_init(build())
    assert _outcome(fast, (1, [2]), {}) == _outcome(plain, (1, [2]), {}) == {"x": 1, "y": [2]}
    assert _outcome(fast, (), {}) == {"x": 0, "y": []}

    @dataclass(frozen=True)
    class Open:
        x: int = 0

    def on_open() -> type:
        @dataclass(frozen=True, slots=True)
        class OnOpen(Open):  # (dataclasses gives x a slot here too)
            y: int = 1

        return OnOpen

    assert _outcome(slot_init(on_open()), (3,), {"y": 4}) == _outcome(on_open(), (3,), {"y": 4}) == {"x": 3, "y": 4}


def test_filled_through_a_twin_the_instance_is_of_its_class_again() -> None:
    """Six fields or more: the instance is filled as an instance of a twin class and given its class back."""
    _, fast = _pair()
    assert "_twin" in fast.__init__.__globals__
    made = fast(1, "a", must=2)
    assert type(made) is fast and made.__class__ is fast
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.need = 3
    assert [c.__name__ for c in DECORATED if "_twin" in c.__init__.__globals__] == [
        "LedgerRecord", "RequestContext", "RouteRequest", "Decision", "Completion"]


def test_a_raising_default_factory_leaves_the_instance_of_its_class() -> None:
    def boom() -> int:
        raise ValueError("factory")

    fields_ = [(f"f{i}", int, field(default=i)) for i in range(6)] + [("late", int, field(default_factory=boom))]
    cls = slot_init(dataclasses.make_dataclass("Boom", fields_, frozen=True, slots=True))
    made = cls(late=1)
    with pytest.raises(ValueError, match="factory"):
        cls.__init__(made)  # filled again in place: the factory raises half way
    assert type(made) is cls
    assert made.f0 == 0 and made.late == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.f0 = 1


def test_instances_of_a_subclass_are_filled_as_before() -> None:
    """A plain subclass (with a `__dict__`, another layout) uses the inherited `__init__`: slot by slot."""
    plain, fast = _pair()

    class Loose(fast):  # type: ignore[valid-type,misc]
        pass

    made = Loose(1, "a", must=2)
    assert type(made) is Loose and hasattr(made, "__dict__")
    values = {f.name: getattr(made, f.name) for f in dataclasses.fields(made)}
    want = _outcome(plain, (1, "a"), {"must": 2})
    assert isinstance(want, dict)
    values.pop("counted"), want.pop("counted")
    assert values == want


def test_no_twin_for_a_base_with_slots() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        x: int = 0

    @dataclass(frozen=True, slots=True)
    class Sub(Base):
        a: int = 1
        b: int = 2
        c: int = 3
        d: int = 4
        e: int = 5

    fast = slot_init(Sub)
    assert "_twin" not in fast.__init__.__globals__
    assert fast(9).x == 9 and fast().e == 5


def test_a_layout_cpython_will_not_swap_is_filled_slot_by_slot() -> None:
    """`weakref_slot=True`: on 3.11 `__class__` assignment to the twin is refused ("layout differs"), which
    used to raise TypeError on every construction; the twin is now tried once, at decoration."""

    @dataclass(frozen=True, slots=True, weakref_slot=True)
    class Watched:
        a: int
        b: int = 1
        c: int = 2
        d: int = 3
        e: int = 4
        f: list[int] = field(default_factory=list)

    fast = slot_init(Watched)
    made = fast(7, f=[1])
    assert type(made) is fast
    assert (made.a, made.b, made.e, made.f) == (7, 1, 4, [1])
    assert weakref.ref(made)() is made
    assert made == dataclasses.replace(made, b=1) != dataclasses.replace(made, b=2)
