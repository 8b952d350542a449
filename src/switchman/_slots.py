"""A cheaper `__init__` for the frozen, slotted dataclasses built on every request.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__(self, name,
value)`: a call through the generic attribute machinery per field (~90 ns each; LedgerRecord's 38
fields cost ~3.5 µs a request). `slot_init` gives the class an `__init__` with the same signature,
defaults and default factories that stores each field through its slot's descriptor instead (about
half the cost). Nothing else changes: `__setattr__` still raises FrozenInstanceError, and `__eq__`,
`__hash__`, `__repr__`, `dataclasses.replace` and pickling are dataclasses' own.

A slot descriptor's `__set__` is itself a call through a method wrapper (an argument tuple made and
unpacked, ~400 instructions a field). So an instance of the class itself (not of a subclass) with 6
fields or more is filled as an instance of a twin class with the same slots and no `__setattr__` of
its own, where `self.name = value` is a plain slot store, and is given its class back before
`__init__` returns (also when a default factory raises): ~30 instructions a field, plus ~1,000 for
the two class changes.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields, is_dataclass
from types import MemberDescriptorType
from typing import Any, TypeVar

__all__ = ["slot_init"]

T = TypeVar("T")


class _Factory:
    """The default of a field its default factory fills (shown as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()
#: The generated `__init__`'s own names: a field (a parameter) so named would shadow one.
#: From this many fields on, filling a twin wins (Usage's 3 fields: +570 instructions; LedgerRecord's 38: -15,900).
_TWIN_FIELDS = 6
_RESERVED = re.compile(r"_FACTORY$|_(set|make|default)\d+$|_(cls|twin|object_setattr)$")


def slot_init(cls: type[T]) -> type[T]:
    """Class decorator (above `@dataclass(frozen=True, slots=True)`): the class's `__init__` replaced by one
    that stores each field through its slot's descriptor. Refuses what it does not reproduce: a class
    that is not a slotted dataclass, `__post_init__`, fields with `init=False`, a field named as one of the
    `__init__`'s own names (`self`, `_FACTORY`, `_set0`, ...)."""
    if not is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: slot_init needs a slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: slot_init does not call __post_init__")
    scope: dict[str, Any] = {"_FACTORY": _FACTORY, "_cls": cls, "_object_setattr": object.__setattr__}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    stores: list[str] = []  # the same, through the twin's slots
    for i, f in enumerate(fields(cls)):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: slot_init does not reproduce init=False")
        if f.name == "self" or _RESERVED.match(f.name):
            raise TypeError(f"{cls.__name__}.{f.name}: slot_init uses this name itself")
        # (a field of a dataclass base has its slot there)
        slot = next((c.__dict__[f.name] for c in cls.__mro__ if f.name in c.__dict__), None)
        if not isinstance(slot, MemberDescriptorType):
            raise TypeError(f"{cls.__name__}.{f.name}: slot_init needs every field in a slot (a base without slots?)")
        scope[f"_set{i}"] = slot.__set__
        value = f.name
        if f.default_factory is not MISSING:
            scope[f"_make{i}"] = f.default_factory
            param = f"{f.name}=_FACTORY"
            value = f"_make{i}() if {f.name} is _FACTORY else {f.name}"
        elif f.default is not MISSING:
            scope[f"_default{i}"] = f.default
            param = f"{f.name}=_default{i}"
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    _set{i}(self, {value})")
        stores.append(f"            self.{f.name} = {value}")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    twin = _twin(cls) if len(stores) >= _TWIN_FIELDS else None
    if twin is not None:
        scope["_twin"] = twin
        body = ["    if type(self) is _cls:  # (a subclass may have another layout: its instances as before)",
                "        _object_setattr(self, '__class__', _twin)",
                "        try:", *stores,
                "        finally:",
                "            self.__class__ = _cls",
                "        return", *body]
    exec(f"def __init__({params}) -> None:\n" + ("\n".join(body) or "    pass"), scope)  # noqa: S102
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def _twin(cls: type) -> type | None:
    """A class whose instances have `cls`'s layout (so an instance may change between the two) and plain slot
    stores; None when `cls` has a base other than object (its slots, its `__setattr__`, are the base's), or
    when CPython refuses the swap (3.11: `weakref_slot=True` puts `__weakref__` after the fields, and its
    layout check then says the layouts differ), tried here once rather than failing every construction.
    (A field's name is never mangled here: such a field has no slot under its name, refused above.)"""
    if cls.__bases__ != (object,):
        return None
    twin = type(f"_{cls.__name__}Slots", (object,), {"__slots__": cls.__dict__["__slots__"],
                                                      "__module__": cls.__module__})
    try:
        object.__setattr__(object.__new__(cls), "__class__", twin)
    except TypeError:
        return None
    return twin
