"""The engine state as plain data: objects <-> JSON-safe trees, driven by type annotations.

A ``StateCodec`` compiles, once per type, an encoder and a decoder from the dataclass fields
and their annotations (``typing.get_type_hints``), so that a class that gains, loses or retypes
a field needs no change here. What it may build is an explicit allow-list:

- JSON scalars; ``float`` (non-finite values as the strings ``"inf"``, ``"-inf"``, ``"nan"``)
  and subclasses of ``float`` named in the annotations or allow-list (e.g. ``At``);
- ``list``, ``tuple``, ``deque`` (with its ``maxlen``), ``set``, ``frozenset``, ``dict`` /
  ``Mapping`` (string keys as a JSON object, other keys as ``[key, value]`` pairs), unions;
- enums, dataclasses and pydantic models reachable from the roots' annotations or allow-listed
  (built with ``object.__new__`` and the decoded fields, or ``model_validate``);
- detectors behind the ``Detector`` protocol, through their own ``to_state`` / ``from_state``
  (plain dicts), for the detector classes given by ``kind``.

Where an annotation says ``Any``, a value is encoded by its runtime type: JSON values as they
are, anything else tagged ``{"$": "<name>", "v": ...}`` with a name from the allow-list. Nothing
else is ever constructed: no pickle, no ``eval``, no import by name.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import math
import operator
import types
from collections.abc import (
    Callable,
    Collection,
    Iterable,
    Mapping,
    MutableMapping,
    MutableSequence,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints

import orjson
from pydantic import BaseModel

__all__ = ["StateCodec", "StateDecodeError"]

Fn = Callable[[Any], Any]
TAG = "$"
_NONFINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
_SCALARS = (str, int, bool)
_NUMBERS = frozenset((float, int))


class StateDecodeError(ValueError):
    """A tree that does not have the shape the annotations describe."""


def _fail(what: str, value: Any) -> StateDecodeError:
    return StateDecodeError(f"expected {what}, got {type(value).__name__}")


def _enc_float(v: Any) -> Any:
    if v - v == 0:  # finite (inf - inf and nan - nan are nan)
        return v
    return repr(v)


def _dec_float(v: Any) -> Any:
    t = type(v)
    if t is float or t is int:
        return v  # an int in a float field stays an int, as it was
    if t is str and v in _NONFINITE:
        return _NONFINITE[v]
    raise _fail("a number", v)


def _dump_model(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    raise TypeError(f"{type(v).__name__} is not allowed in the state")


def _finite_floats(items: Collection[Any]) -> bool:
    """Only ints and finite floats (their sum is finite), checked in C."""
    if not _NUMBERS.issuperset(map(type, items)):
        return False
    try:
        return math.isfinite(sum(items))
    except OverflowError:  # an int too large for a float
        return False


def _scalar_dec(kind: type) -> Fn:
    def dec(v: Any) -> Any:
        if type(v) is not kind:
            raise _fail(kind.__name__, v)
        return v

    return dec


def _dec_none(v: Any) -> Any:
    if v is not None:
        raise _fail("null", v)
    return None


def _plain_kind(tp: Any) -> type | None:
    """The type whose values decode as themselves (str, int, bool), else None."""
    return tp if tp in _SCALARS else None


def _stored_fields(tp: type) -> tuple[dataclasses.Field[Any], ...]:
    """A dataclass's fields but its caches (metadata ``transient``: never stored, decoded as
    their default, which must be immutable)."""
    return tuple(f for f in dataclasses.fields(tp) if not f.metadata.get("transient"))


def _named_tuple_fields(tp: type) -> tuple[Any, ...] | None:
    """A NamedTuple's field types, in order: it is encoded as the plain tuple of them (None
    for any other type)."""
    names = getattr(tp, "_fields", None)
    if not issubclass(tp, tuple) or names is None:
        return None
    hints = get_type_hints(tp)
    return tuple(hints[name] for name in names)


class DetectorClass(Protocol):
    """A detector class the codec may rebuild: its kind, and ``from_state``."""

    @property
    def _kind(self) -> str: ...

    def from_state(self, state: dict[str, Any], /) -> object: ...


def _identity(v: Any) -> Any:
    return v


def _default_of(f: dataclasses.Field[Any]) -> Callable[[], Any] | None:
    """A field's default as a function giving it (a fresh one from a factory), or None."""
    if f.default is not dataclasses.MISSING:
        return functools.partial(_identity, f.default)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


def _sort(items: Iterable[Any]) -> list[Any]:
    """Set members in a stable order when they are comparable (equal states, equal bytes)."""
    out = list(items)
    try:
        out.sort()
    except TypeError:
        pass
    return out


class StateCodec:
    """Encoders and decoders for ``roots`` and every type their annotations reach.

    >>> from dataclasses import dataclass, field
    >>> from collections import deque
    >>> @dataclass
    ... class Box:
    ...     ring: collections.deque[float] = field(default_factory=deque)
    ...     by_pair: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    >>> codec = StateCodec([Box])
    >>> box = Box(deque([1.0, float("inf")], maxlen=2), {("a", 1): {"y", "x"}})
    >>> tree = codec.encode(Box, box)
    >>> tree
    {'ring': {'maxlen': 2, 'items': [1.0, 'inf']}, 'by_pair': [[['a', 1], ['x', 'y']]]}
    >>> codec.decode(Box, tree) == box
    True
    """

    def __init__(
        self,
        roots: Iterable[Any],
        *,
        allowed: Iterable[type] = (),
        detectors: Iterable[DetectorClass] = (),
    ) -> None:
        self._compiled: dict[Any, tuple[Fn, Fn]] = {}
        self._natives: dict[Any, bool] = {}
        self._named: dict[str, type] = {}
        self._names: dict[type, str] = {}
        self._detectors: dict[str, DetectorClass] = {}
        for detector in detectors:
            self._detectors[detector._kind] = detector
        for cls in allowed:
            self._compile(cls)
        for root in roots:
            self._compile(root)

    # ------------------------------------------------------------------ public

    def encode(self, tp: Any, value: Any) -> Any:
        """The JSON-safe tree of ``value``, whose annotation is ``tp``."""
        return self._compile(tp)[0](value)

    def decode(self, tp: Any, tree: Any) -> Any:
        """Rebuild a ``tp`` from ``encode``'s tree; ``StateDecodeError`` if it does not fit."""
        try:
            return self._compile(tp)[1](tree)
        except StateDecodeError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise StateDecodeError(f"{type(err).__name__}: {err}") from None

    def schema(self, roots: dict[str, Any]) -> dict[str, Any]:
        """A JSON Schema (draft 2020-12) of the trees of ``roots`` (name -> type), one
        ``$defs`` entry per class: what ``decode`` accepts, from the same annotations."""
        defs: dict[str, Any] = {}
        writer = _SchemaWriter(self, defs)
        props = {name: writer.of(tp) for name, tp in roots.items()}
        for cls in list(self._named.values()):  # also those only tagged where it says Any
            writer.of(cls)
        return {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "oneOf": [{"title": name, **ref} for name, ref in props.items()],
                "$defs": dict(sorted(defs.items()))}

    def allowed_names(self) -> list[str]:
        """Names of the classes that may appear, tagged, where an annotation says ``Any``."""
        return sorted(self._named)

    # ------------------------------------------------------------------ compilation

    def _native(self, tp: Any) -> bool:
        """True if orjson's own encoding of a ``tp`` is this codec's (dataclasses as objects,
        enums as values, tuples as lists, string-keyed dicts) and has no ``null`` unless a
        float is not finite — orjson writes those as ``null``, so such bytes are redone."""
        known = self._natives.get(tp)
        if known is not None:
            return known
        self._natives[tp] = False  # recursive types take the general path
        origin, args = get_origin(tp), get_args(tp)
        if tp in (str, int, bool, float):
            native = True
        elif origin in (list, Sequence, tuple) and args:
            items = args[:1] if origin is not tuple or args[-1] is Ellipsis else args
            native = all(self._native(a) for a in items)
        elif origin in (dict, Mapping) and args:
            native = args[0] is str and self._native(args[1])
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            native = all(type(m.value) in (str, int) for m in tp)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            native = True  # through _dump_model, as _model encodes it
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            native = all(self._native(hints[f.name]) for f in _stored_fields(tp))
        else:
            native = False
        self._natives[tp] = native
        return native

    def _bulk(self, enc: Fn) -> Fn:
        """``enc`` of a container of native values, done by orjson in one call."""
        dumps, fragment = orjson.dumps, orjson.Fragment

        def enc_bulk(v: Any) -> Any:
            raw = dumps(v, default=_dump_model)
            return enc(v) if b"null" in raw else fragment(raw)

        return enc_bulk

    def _compile(self, tp: Any) -> tuple[Fn, Fn]:
        done = self._compiled.get(tp)
        if done is not None:
            return done
        cell: list[Fn] = []
        # A forward reference for recursive types, replaced once built.
        self._compiled[tp] = (lambda v: cell[0](v), lambda v: cell[1](v))
        try:
            built = self._build(tp)
        except BaseException:
            del self._compiled[tp]
            raise
        cell.extend(built)
        self._compiled[tp] = built
        return built

    def _register(self, cls: type) -> None:
        name = cls.__name__
        other = self._named.get(name)
        if other is not None and other is not cls:
            raise TypeError(f"two state classes named {name}: {other!r} and {cls!r}")
        self._named[name] = cls
        self._names[cls] = name

    def _build(self, tp: Any) -> tuple[Fn, Fn]:
        if tp is Any or tp is object:
            return self._dyn_enc, self._dyn_dec
        if tp is None or tp is type(None):
            return _identity, _dec_none
        if tp is float:
            return _enc_float, _dec_float
        if tp in _SCALARS:
            return _identity, _scalar_dec(tp)
        origin, args = get_origin(tp), get_args(tp)
        if origin is Literal:
            choices = set(args)

            def dec_literal(v: Any) -> Any:
                if v not in choices:
                    raise StateDecodeError(f"{v!r} is not one of {sorted(map(str, choices))}")
                return v

            return _identity, dec_literal
        if origin is Union or origin is types.UnionType:
            return self._union(args)
        if origin in (list, Sequence, MutableSequence):
            return self._list(args[0] if args else Any)
        if origin is tuple:
            return self._tuple(args)
        if origin is collections.deque:
            return self._deque(args[0] if args else Any)
        if origin in (set, frozenset, AbstractSet):
            return self._set(args[0] if args else Any, frozenset if origin is frozenset else set)
        if origin in (dict, Mapping, MutableMapping):
            key, value = args if args else (Any, Any)
            return self._dict(key, value)
        if tp in (list, tuple, dict, set, frozenset, collections.deque):
            return self._build(tp[Any] if tp is not dict else dict[Any, Any])
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                self._register(tp)
                return (lambda v: v.value), tp
            if issubclass(tp, float):
                self._register(tp)
                return (lambda v: _enc_float(float(v))), (lambda v: tp(_dec_float(v)))
            if issubclass(tp, BaseModel):
                self._register(tp)
                return self._model(tp)
            if dataclasses.is_dataclass(tp):
                self._register(tp)
                return self._dataclass(tp)
            if (field_types := _named_tuple_fields(tp)) is not None:
                self._register(tp)
                enc, dec = self._tuple(field_types)
                return enc, (lambda v: tp(*dec(v)))
            if getattr(tp, "_is_protocol", False):
                return self._detector, self._dec_detector
        raise TypeError(f"type {tp!r} is not allowed in the state")

    def _union(self, args: tuple[Any, ...]) -> tuple[Fn, Fn]:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            enc, dec = self._compile(members[0])
            return (lambda v: None if v is None else enc(v)), (
                lambda v: None if v is None else dec(v))
        for member in members:  # registered, so that the tagged encoding may name them
            self._compile(member)
        kinds: set[Any] = set()
        for member in args:
            origin = get_origin(member)
            kinds.update({type(a) for a in get_args(member)} if origin is Literal
                         else {origin or member})
        if float in kinds:
            kinds.add(int)
        if Any in kinds or object in kinds:
            return self._dyn_enc, self._dyn_dec

        def dec_union(v: Any) -> Any:
            value = self._dyn_dec(v)
            if type(value) not in kinds:
                raise StateDecodeError(f"{type(value).__name__} is not one of the union's types")
            return value

        return self._dyn_enc, dec_union

    def _list(self, item: Any) -> tuple[Fn, Fn]:
        enc, dec = self._compile(item)
        if item is float:
            def enc_floats(v: list[Any]) -> Any:
                return v if _finite_floats(v) else [enc(x) for x in v]

            def dec_floats(v: Any) -> Any:
                if type(v) is not list:
                    raise _fail("a list", v)
                return v if _finite_floats(v) else [dec(x) for x in v]

            return enc_floats, dec_floats
        if item in _SCALARS:
            def dec_scalars(v: Any) -> Any:
                if type(v) is not list or not all(type(x) is item for x in v):
                    raise _fail(f"a list of {item.__name__}", v)
                return v

            return list, dec_scalars

        def dec_list(v: Any) -> Any:
            if type(v) is not list:
                raise _fail("a list", v)
            return [dec(x) for x in v]

        def enc_list(v: Any) -> Any:
            return [enc(x) for x in v]

        return (self._bulk(enc_list) if self._native(item) else enc_list), dec_list

    def _tuple(self, args: tuple[Any, ...]) -> tuple[Fn, Fn]:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            enc_list, dec_list = self._list(args[0] if args else Any)
            return (lambda v: enc_list(list(v))), (lambda v: tuple(dec_list(v)))
        if args == ((),):
            args = ()
        parts = [self._compile(a) for a in args]

        def enc(v: Any) -> Any:
            return [e(x) for (e, _), x in zip(parts, v, strict=True)]

        def dec(v: Any) -> Any:
            if type(v) is not list or len(v) != len(parts):
                raise _fail(f"a list of {len(parts)}", v)
            return tuple(d(x) for (_, d), x in zip(parts, v, strict=True))

        return enc, dec

    def _deque(self, item: Any) -> tuple[Fn, Fn]:
        enc_list, dec_list = self._list(item)

        def enc(v: collections.deque[Any]) -> Any:
            items = enc_list(list(v))
            return items if v.maxlen is None else {"maxlen": v.maxlen, "items": items}

        def dec(v: Any) -> Any:
            if type(v) is dict:
                maxlen = v.get("maxlen")
                if type(maxlen) is not int or maxlen < 0 or set(v) != {"maxlen", "items"}:
                    raise _fail("a deque", v)
                return collections.deque(dec_list(v["items"]), maxlen=maxlen)
            return collections.deque(dec_list(v))

        return enc, dec

    def _set(self, item: Any, kind: type) -> tuple[Fn, Fn]:
        enc, dec = self._compile(item)

        def dec_set(v: Any) -> Any:
            if type(v) is not list:
                raise _fail("a list", v)
            return kind(dec(x) for x in v)

        return (lambda v: [enc(x) for x in _sort(v)]), dec_set

    def _dict(self, key: Any, value: Any) -> tuple[Fn, Fn]:
        enc_v, dec_v = self._compile(value)
        if key is str:
            if value in _SCALARS or value is float:
                fast = _finite_floats if value is float else (
                    lambda vs: all(type(x) is value for x in vs))

                def enc_plain(v: Mapping[str, Any]) -> Any:
                    return v if type(v) is dict and fast(v.values()) else {
                        k: enc_v(x) for k, x in v.items()}

                def dec_plain(v: Any) -> Any:
                    if type(v) is not dict:
                        raise _fail("an object", v)
                    return v if fast(v.values()) else {k: dec_v(x) for k, x in v.items()}

                return enc_plain, dec_plain

            def dec_obj(v: Any) -> Any:
                if type(v) is not dict:
                    raise _fail("an object", v)
                return {k: dec_v(x) for k, x in v.items()}

            def enc_obj(v: Any) -> Any:
                return {k: enc_v(x) for k, x in v.items()}

            return (self._bulk(enc_obj) if self._native(value) else enc_obj), dec_obj
        enc_k, dec_k = self._compile(key)

        def dec_pairs(v: Any) -> Any:
            if type(v) is not list:
                raise _fail("a list of pairs", v)
            out = {}
            for pair in v:
                if type(pair) is not list or len(pair) != 2:
                    raise _fail("a [key, value] pair", pair)
                out[dec_k(pair[0])] = dec_v(pair[1])
            return out

        return (lambda v: [[enc_k(k), enc_v(x)] for k, x in v.items()]), dec_pairs

    def _model(self, tp: type[BaseModel]) -> tuple[Fn, Fn]:
        def enc(v: Any) -> Any:
            if type(v) is not tp:
                raise TypeError(f"expected {tp.__name__}, got {type(v).__name__}")
            return v.model_dump(mode="json")

        def dec(v: Any) -> Any:
            if type(v) is not dict:
                raise _fail("an object", v)
            return tp.model_validate(v)

        return enc, dec

    def _dataclass(self, tp: type) -> tuple[Fn, Fn]:
        hints = get_type_hints(tp)
        fields = []
        stored = _stored_fields(tp)
        caches = [(f.name, _default_of(f)) for f in dataclasses.fields(tp) if f not in stored]
        for f in stored:
            enc, dec = self._compile(hints[f.name])
            fields.append((f.name, enc, dec, _default_of(f)))
        names = {name for name, *_ in fields}
        new = object.__new__
        setattr_ = object.__setattr__
        # Hot path of every checkpoint: all attributes in one C call, and no call at all for
        # the fields whose encoding is the value itself (str, int, bool) or a finite float.
        plan = [(name, 0 if enc is _identity else 1 if enc is _enc_float else 2, enc)
                for name, enc, _, _ in fields]
        getter: Callable[[Any], Any]
        if len(plan) > 1:
            getter = operator.attrgetter(*(name for name, *_ in fields))
        else:  # attrgetter of one name returns no tuple
            getter = lambda v: tuple(getattr(v, name) for name, *_ in fields)  # noqa: E731

        def enc_dc(v: Any) -> Any:
            if type(v) is not tp:
                raise TypeError(f"expected {tp.__name__}, got {type(v).__name__}")
            return {
                name: x if how == 0 or (how == 1 and type(x) is float and x - x == 0)
                else enc(x)
                for (name, how, enc), x in zip(plan, getter(v), strict=True)
            }

        scalar = {id(_enc_float): float}
        checks = [(name, scalar.get(id(enc)) or _plain_kind(hints[name]), dec, default)
                  for name, enc, dec, default in fields]

        def dec_dc(v: Any) -> Any:
            if type(v) is not dict:
                raise _fail(f"{tp.__name__} (an object)", v)
            if not names.issuperset(v):
                raise StateDecodeError(f"{tp.__name__} has no field {sorted(set(v) - names)}")
            obj: Any = new(tp)
            for name, kind, dec, default in checks:
                if name in v:
                    value = v[name]
                    # str, int, bool and finite floats are checked here, the rest by ``dec``.
                    if kind is None or type(value) is not kind:
                        value = dec(value)
                elif default is not None:
                    value = default()
                else:
                    raise StateDecodeError(f"{tp.__name__}: field {name} is missing")
                setattr_(obj, name, value)
            for name, fresh in caches:  # a cache has a default (TRANSIENT fields)
                setattr_(obj, name, fresh() if fresh is not None else None)
            return obj

        return enc_dc, dec_dc

    def _detector(self, v: Any) -> Any:
        kind = getattr(type(v), "_kind", "")
        registered: object = self._detectors.get(kind)  # a class, compared by identity
        if registered is not type(v):
            raise TypeError(f"detector {type(v).__name__} is not allowed in the state")
        detector: Any = v
        return self._dyn_enc(detector.to_state())

    def _dec_detector(self, v: Any) -> Any:
        if type(v) is not dict:
            raise _fail("a detector state (an object)", v)
        cls = self._detectors.get(v.get("kind", ""))  # "": no detector has that kind
        if cls is None:
            raise StateDecodeError(f"unknown detector kind {v.get('kind')!r}")
        return cls.from_state(self._dyn_dec(v))

    # ------------------------------------------------------------------ Any

    def _dyn_enc(self, v: Any) -> Any:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            return v
        if t is float:
            return v if v - v == 0 else {TAG: "float", "v": repr(v)}
        if t is list:
            if _finite_floats(v):
                return v[:]  # the common case (a detector's levels and counts), in C
            return [self._dyn_enc(x) for x in v]
        if t is dict:
            if TAG not in v and all(type(k) is str for k in v):
                return {k: self._dyn_enc(x) for k, x in v.items()}
            return {TAG: "dict", "v": [[self._dyn_enc(k), self._dyn_enc(x)] for k, x in v.items()]}
        if t is tuple:
            return {TAG: "tuple", "v": [self._dyn_enc(x) for x in v]}
        if t is set or t is frozenset:
            return {TAG: t.__name__, "v": [self._dyn_enc(x) for x in _sort(v)]}
        if t is collections.deque:
            return {TAG: "deque", "maxlen": v.maxlen, "v": [self._dyn_enc(x) for x in v]}
        name = self._names.get(t)
        if name is None:
            raise TypeError(f"{t.__module__}.{t.__qualname__} is not allowed in the state")
        return {TAG: name, "v": self._compiled[t][0](v)}

    def _dyn_dec(self, v: Any) -> Any:
        t = type(v)
        if t is list:
            return [self._dyn_dec(x) for x in v]
        if t is dict:
            tag = v.get(TAG)
            if tag is None:
                return {k: self._dyn_dec(x) for k, x in v.items()}
            body = v.get("v")
            if tag == "float":
                return _dec_float(body)
            if tag in ("tuple", "set", "frozenset", "deque", "dict"):
                if type(body) is not list:
                    raise _fail(f"a tagged {tag} list", body)
                items = [self._dyn_dec(x) for x in body]
                if tag == "tuple":
                    return tuple(items)
                if tag == "set":
                    return set(items)
                if tag == "frozenset":
                    return frozenset(items)
                if tag == "deque":
                    maxlen = v.get("maxlen")
                    if maxlen is not None and type(maxlen) is not int:
                        raise _fail("a deque maxlen", maxlen)
                    return collections.deque(items, maxlen=maxlen)
                return {k: x for k, x in (self._pair(item) for item in items)}
            cls = self._named.get(tag)
            if cls is None:
                raise StateDecodeError(f"{tag!r} is not an allowed state type")
            return self._compiled[cls][1](body)
        if t is str or t is int or t is float or t is bool or v is None:
            return v
        raise _fail("a JSON value", v)

    @staticmethod
    def _pair(item: Any) -> tuple[Any, Any]:
        if type(item) is not list or len(item) != 2:
            raise _fail("a [key, value] pair", item)
        return item[0], item[1]



class _SchemaWriter:
    """JSON Schema of the codec's trees, type by type (mirrors ``StateCodec._build``)."""

    def __init__(self, codec: StateCodec, defs: dict[str, Any]) -> None:
        self.codec = codec
        self.defs = defs

    def _ref(self, cls: type, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # recursion guard
            self.defs[name] = build()
        return {"$ref": f"#/$defs/{name}"}

    def of(self, tp: Any) -> dict[str, Any]:  # noqa: C901 - one branch per allowed kind
        if tp is Any or tp is object:
            tagged = {"type": "object", "required": [TAG], "properties": {
                TAG: {"enum": ["float", "tuple", "set", "frozenset", "deque", "dict",
                               *self.codec.allowed_names()]}}}
            return {"description": "a JSON value; other values tagged by type", "anyOf": [
                {"type": ["null", "boolean", "integer", "number", "string", "array"]},
                {"type": "object"}, tagged]}
        if tp is None or tp is type(None):
            return {"type": "null"}
        if tp is float:
            return {"anyOf": [{"type": "number"}, {"enum": sorted(_NONFINITE)}]}
        if tp in _SCALARS:
            return {"type": {str: "string", int: "integer", bool: "boolean"}[tp]}
        origin, args = get_origin(tp), get_args(tp)
        if origin is Literal:
            return {"enum": list(args)}
        if origin is Union or origin is types.UnionType:
            return {"anyOf": [self.of(a) for a in args]}
        if origin in (list, Sequence, MutableSequence):
            return {"type": "array", "items": self.of(args[0] if args else Any)}
        if origin is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                return {"type": "array", "items": self.of(args[0] if args else Any)}
            return {"type": "array", "prefixItems": [self.of(a) for a in args],
                    "items": False}
        if origin is collections.deque:
            items = {"type": "array", "items": self.of(args[0] if args else Any)}
            return {"anyOf": [items, {"type": "object", "required": ["maxlen", "items"],
                                      "properties": {"maxlen": {"type": "integer"},
                                                     "items": items},
                                      "additionalProperties": False}]}
        if origin in (set, frozenset, AbstractSet):
            return {"type": "array", "items": self.of(args[0] if args else Any)}
        if origin in (dict, Mapping, MutableMapping):
            key, value = args if args else (Any, Any)
            if key is str:
                return {"type": "object", "additionalProperties": self.of(value)}
            return {"type": "array", "items": {"type": "array", "prefixItems": [
                self.of(key), self.of(value)], "items": False}}
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self._ref(tp, lambda: {"enum": [m.value for m in tp]})
            if issubclass(tp, float):
                return self._ref(tp, lambda: self.of(float))
            if issubclass(tp, BaseModel):
                return self._ref(tp, lambda: self._model(tp))
            if dataclasses.is_dataclass(tp):
                return self._ref(tp, lambda: self._dataclass(tp))
            if (field_types := _named_tuple_fields(tp)) is not None:
                fields = types.GenericAlias(tuple, field_types)
                return self._ref(tp, lambda: self.of(fields))
            if getattr(tp, "_is_protocol", False):
                return {"type": "object", "required": ["kind", "version", "params", "state"],
                        "properties": {"kind": {"enum": sorted(self.codec._detectors)}},
                        "description": "a detector's own to_state()"}
        raise TypeError(f"type {tp!r} is not allowed in the state")

    def _model(self, tp: type[BaseModel]) -> dict[str, Any]:
        schema = tp.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            self.defs.setdefault(name, sub)
        return schema

    def _dataclass(self, tp: type) -> dict[str, Any]:
        hints = get_type_hints(tp)
        fields = _stored_fields(tp)
        return {
            "type": "object",
            "description": (tp.__doc__ or "").strip().split("\n")[0],
            "properties": {f.name: self.of(hints[f.name]) for f in fields},
            "required": [f.name for f in fields if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING],
            "additionalProperties": False,
        }
