"""OTLP/JSON read into typed structs made from the official classes' descriptors.

``json_format.Parse`` reads JSON with ``json`` and then sets every field from Python, one
checked call at a time: most of the OTLP/JSON decode time. Here ``msgspec`` decodes the text in
C straight into structs made, once, from the descriptors of the official ``opentelemetry-proto``
classes: one struct per message type, one attribute per field under the field's own name (so
the walk in ``streams/ingest/otlp.py`` reads them exactly as it reads the protobuf classes),
read from the field's proto3 JSON name (``timeUnixNano``), typed as the proto3 JSON mapping
spells the field (64-bit integers as a number or as decimal text, enums by number or by name,
bytes as base64), with the field's range, and the proto3 default when absent. ``oneof``
members and ``optional`` fields are ``None`` when absent; ``WhichOneof`` and ``HasField``
answer as the protobuf classes do.

Only what the structs type for certain is read this way: the form the Collector writes.
Anything else is refused (``msgspec.ValidationError`` / ``DecodeError``, or ``Unsure`` from
the walk) and the caller reads the message with ``json_format.Parse`` instead, so that its
result and every error are ``json_format``'s: an unknown field, a field in its
``snake_case`` spelling, ``null`` outside a ``oneof``, two members of a ``oneof``, a number as
text where a number is expected, ``"NaN"``, a URL-safe base64, a value out of range.
``tests/unit/test_otlp_json.py`` cross-checks both paths on every golden message and on
variants and random mutations of them.

Known differences: a JSON object with a duplicate key is read as its last value, where
``json_format.Parse`` refuses the message; nesting deeper than 100 is only refused by
``json_format`` if the walk reads it (attribute values are; exemplars are not).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from operator import attrgetter
from typing import Annotated, Any, Optional, TypeVar, cast  # noqa: UP035 - forward refs

import msgspec
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["Unsure", "decoder", "integer"]

M = TypeVar("M", bound=Message)


class Unsure(Exception):
    """The struct path does not read this input exactly as ``json_format`` would."""


def _whole(low: int, high: int, digits: int) -> object:
    """An integer field: a JSON number in range, or decimal text short enough to be in range."""
    sign = "-?" if low < 0 else ""
    return (Annotated[int, msgspec.Meta(ge=low, le=high)]
            | Annotated[str, msgspec.Meta(pattern=f"^{sign}[0-9]{{1,{digits}}}$")])


_INTEGER_TYPES: dict[int, object] = {
    FieldDescriptor.CPPTYPE_INT32: _whole(-(2**31), 2**31 - 1, 9),
    FieldDescriptor.CPPTYPE_UINT32: _whole(0, 2**32 - 1, 9),
    FieldDescriptor.CPPTYPE_INT64: _whole(-(2**63), 2**63 - 1, 18),
    FieldDescriptor.CPPTYPE_UINT64: _whole(0, 2**63 - 1, 19),  # msgspec's bounds are int64
}


def integer(value: int | str) -> int:
    """An integer field's value (the structs keep 64-bit integers' text as text)."""
    return value if type(value) is int else int(value)


def _struct_name(descriptor: Descriptor) -> str:
    return "_otlp_" + str(descriptor.full_name).replace(".", "_")


def _scalar(field: FieldDescriptor) -> object:
    cpp = field.cpp_type
    if cpp in _INTEGER_TYPES:
        return _INTEGER_TYPES[cpp]
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return float
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return bytes if field.type == FieldDescriptor.TYPE_BYTES else str
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        names = tuple(v.name for v in field.enum_type.values)
        return _INTEGER_TYPES[FieldDescriptor.CPPTYPE_INT32] | Annotated[
            str, msgspec.Meta(pattern="^(" + "|".join(names) + ")$")]
    raise TypeError(f"{field.full_name}: no struct type for this field (cpp type {cpp})")


def _default(field: FieldDescriptor) -> Any:
    if field.is_repeated:
        return ()  # a tuple: nothing to allocate (or for the GC to track) when absent
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        name = _struct_name(field.message_type)
        return msgspec.field(default_factory=lambda: getattr(_MODULE, name)())
    return field.default_value


# The walk in streams/ingest/otlp.py asks every Metric which member of ``data`` it holds (to
# map it or to count its points), and ``WhichOneof`` refuses two: no check when decoding.
_ONEOFS_CHECKED_BY_THE_WALK = {"opentelemetry.proto.metrics.v1.Metric"}


def _methods(descriptor: Descriptor) -> dict[str, Callable[..., Any]]:
    groups = {o.name: tuple(f.name for f in o.fields) for o in descriptor.oneofs}
    plural = [members for members in groups.values() if len(members) > 1]  # not `optional`

    def which_oneof(self: Any, group: str) -> str | None:
        found = None
        for name in groups[group]:
            if getattr(self, name) is not None:
                if found is not None:
                    raise Unsure  # two members: json_format refuses the message
                found = name
        return found

    def has_field(self: Any, name: str) -> bool:
        return getattr(self, name) is not None

    methods: dict[str, Callable[..., Any]] = {"WhichOneof": which_oneof, "HasField": has_field}
    if plural and descriptor.full_name not in _ONEOFS_CHECKED_BY_THE_WALK:
        methods["__post_init__"] = _one_member_each(plural)
    return methods


def _one_member_each(groups: list[tuple[str, ...]]) -> Callable[[Any], None]:
    """A ``__post_init__`` that refuses two members of one oneof, as json_format does."""
    if len(groups) == 1 and len(groups[0]) == 2:
        first, second = groups[0]

        def pair(self: Any) -> None:  # the common case (a number point's value), cheaper
            if getattr(self, first) is not None and getattr(self, second) is not None:
                raise ValueError("more than one member of a oneof")
        return pair
    getters = [attrgetter(*members) for members in groups]

    def each(self: Any) -> None:
        for members in getters:
            values = members(self)
            if len(values) - values.count(None) > 1:
                raise ValueError("more than one member of a oneof")
    return each


_MODULE = sys.modules[__name__]


def _struct(descriptor: Descriptor) -> type[msgspec.Struct]:
    """The struct of one message type (and, first, of every type it refers to)."""
    name = _struct_name(descriptor)
    if hasattr(_MODULE, name):  # made, or being made (a recursive reference is by name)
        return cast(type[msgspec.Struct], getattr(_MODULE, name))
    setattr(_MODULE, name, None)
    fields: list[tuple[str, object, Any]] = []
    for field in descriptor.fields:
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if field.message_type.full_name.startswith("google.protobuf.") or \
                    field.message_type.GetOptions().map_entry:
                raise TypeError(f"{field.full_name}: well-known types and maps are not read")
            _struct(field.message_type)
            kind: object = _struct_name(field.message_type)
        else:
            kind = _scalar(field)
        if field.is_repeated:
            fields.append((field.name, tuple[kind, ...], _default(field)))  # type: ignore[valid-type]
        elif field.containing_oneof is not None:
            # Optional, not `| None`: kind may be a struct's name (a forward reference)
            fields.append((field.name, Optional[kind], None))  # noqa: UP045
        else:
            fields.append((field.name, kind, _default(field)))
    struct = msgspec.defstruct(
        name, fields, module=__name__, namespace=_methods(descriptor), kw_only=True,
        rename={f.name: f.json_name for f in descriptor.fields},
        forbid_unknown_fields=True, gc=False)
    setattr(_MODULE, name, struct)
    return struct


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}


def decoder(message_class: type[Message]) -> msgspec.json.Decoder[Any]:
    """A decoder of proto3 JSON text into the structs of ``message_class`` (see module doc);
    raises ``msgspec.ValidationError`` / ``msgspec.DecodeError`` on what it does not read."""
    full_name = message_class.DESCRIPTOR.full_name
    found = _DECODERS.get(full_name)
    if found is None:
        found = _DECODERS[full_name] = msgspec.json.Decoder(_struct(message_class.DESCRIPTOR))
    return found
