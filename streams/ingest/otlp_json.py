"""Fill the official OTLP classes from OTLP/JSON faster than ``json_format.Parse``.

``json_format`` parses with ``json`` and then sets every field from Python, one checked call
at a time; that walk was ~90 % of the OTLP/JSON decode time (bench/ingest_decode.py). Here
``orjson`` parses, a plan made once per message type from the classes' own descriptors maps
the proto3 JSON names to field names and converts the values the JSON mapping spells
differently (64-bit integers as strings, enum names, base64 bytes), and the official class's
constructor builds the message in C.

Only what the plan knows for certain is handled this way: a well-formed message with
ordinary fields. Anything else — text ``orjson`` refuses, a value of an unexpected type, a
field given twice (both spellings, two members of a oneof), ``null`` in a list, a map, a
well-known type, an extension, a value out of range — goes to ``json_format.Parse`` on a
fresh message, so the result and
every error message are ``json_format``'s (that path parses the text again). Unknown fields
are ignored, as with ``ignore_unknown_fields=True``.

One difference: an object with a duplicate key (``{"a": 1, "a": 2}``, which RFC 8259 does
not forbid) is read by ``orjson`` as its last value, where ``json_format.Parse`` refuses the
whole message.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypeVar, cast

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["parse_json"]

M = TypeVar("M", bound=Message)

_MAX_DEPTH = 100  # json_format's default max_recursion_depth


class _Unsure(Exception):
    """The fast path does not handle this input; json_format decides."""


# How a field's JSON value becomes a constructor argument (one test per value, no call).
_STRING, _INTEGER, _DOUBLE, _BOOL, _MESSAGE, _MESSAGES, _OTHER = range(7)
_INTEGERS = {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64,
             FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64}


def _integer(value: Any) -> int:
    """As json_format's ``_ConvertInteger`` where it succeeds; _Unsure elsewhere."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str and " " not in value:
        try:
            return int(value)
        except ValueError:
            raise _Unsure from None  # maybe an integral float: json_format decides
    raise _Unsure


def _double(value: Any) -> float:
    kind = type(value)
    if kind is float and math.isfinite(value):
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise _Unsure  # "NaN", "1.5", ...: json_format decides


def _bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise _Unsure
    encoded = value.encode("utf-8")  # exactly json_format's decoding
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _same(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is not kind:
            raise _Unsure
        return value
    return convert


def _enum(field: FieldDescriptor) -> Callable[[Any], Any]:
    names: dict[str, int] = {v.name: v.number for v in field.enum_type.values}
    numbers: set[int] = {v.number for v in field.enum_type.values}
    closed = field.enum_type.is_closed

    def convert(value: Any) -> int:
        if type(value) is str and value in names:
            return names[value]
        if type(value) is int and (not closed or value in numbers):
            return value
        raise _Unsure
    return convert


def _unsure(_: Any) -> Any:
    raise _Unsure


def _scalar(field: FieldDescriptor) -> Callable[[Any], Any]:
    cpp = field.cpp_type
    if cpp in _INTEGERS:
        return _integer
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _same(bool)
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return _enum(field)
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return _bytes if field.type == FieldDescriptor.TYPE_BYTES else _same(str)
    return _unsure  # float (32-bit range checks): json_format


def _repeated(single: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _Unsure
        return [single(item) for item in value]  # None: every converter refuses it
    return convert


@dataclass
class _Plan:
    """JSON key (json name and field name) → (field name, oneof or None, how, sub-plan or
    converter), for one message type; ``usable`` False: json_format handles the type."""

    fields: dict[str, tuple[str, str | None, int, Any]] = dataclass_field(default_factory=dict)
    usable: bool = True


_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[descriptor.full_name] = _Plan()  # registered first: types may recurse
    plan.usable = (not descriptor.full_name.startswith("google.protobuf.")
                   and not descriptor.GetOptions().map_entry)
    for field in descriptor.fields:
        oneof = field.containing_oneof.name if field.containing_oneof else None
        how: int
        arg: Any = None
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            how, arg = (_MESSAGES if field.is_repeated else _MESSAGE), _plan(field.message_type)
        elif field.is_repeated:
            how, arg = _OTHER, _repeated(_scalar(field))
        elif field.cpp_type == FieldDescriptor.CPPTYPE_STRING and \
                field.type != FieldDescriptor.TYPE_BYTES:
            how = _STRING
        elif field.cpp_type in _INTEGERS:
            how = _INTEGER
        elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
            how = _DOUBLE
        elif field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
            how = _BOOL
        else:
            how, arg = _OTHER, _scalar(field)
        spec = (field.name, oneof, how, arg)
        plan.fields[field.json_name] = spec
        plan.fields.setdefault(field.name, spec)
    return plan


def _convert(js: Any, plan: _Plan, depth: int) -> dict[str, Any]:
    """Constructor arguments for ``js``, a JSON object of ``plan``'s message type."""
    if type(js) is not dict or depth > _MAX_DEPTH or not plan.usable:
        raise _Unsure
    out: dict[str, Any] = {}
    fields = plan.fields
    oneofs: list[str] | None = None
    for key, value in js.items():
        spec = fields.get(key)
        if spec is None:
            if key[:1] == "[":  # an extension's name: json_format refuses it
                raise _Unsure
            continue  # an unknown field: ignored
        if value is None:
            continue  # null: the field stays unset
        name, oneof, how, arg = spec
        if name in out:
            raise _Unsure  # given twice, in both spellings
        if oneof is not None:
            if oneofs is None:
                oneofs = [oneof]
            elif oneof in oneofs:
                raise _Unsure
            else:
                oneofs.append(oneof)
        kind = type(value)
        if how == _MESSAGES:
            if kind is not list:
                raise _Unsure
            out[name] = [_convert(item, arg, depth + 1) for item in value]
        elif how == _MESSAGE:
            out[name] = _convert(value, arg, depth + 1)
        elif how == _STRING:
            if kind is not str:  # orjson refuses unpaired surrogates, as json_format does
                raise _Unsure
            out[name] = value
        elif how == _INTEGER:
            out[name] = value if kind is int else _integer(value)
        elif how == _DOUBLE:
            out[name] = value if kind is float and math.isfinite(value) else _double(value)
        elif how == _BOOL:
            if kind is not bool:
                raise _Unsure
            out[name] = value
        else:
            out[name] = arg(value)
    return out


def parse_json(text: bytes, message_class: type[M]) -> M:
    """``message_class`` from proto3 JSON ``text``, as ``json_format.Parse(text, message,
    ignore_unknown_fields=True)`` makes it; raises what that raises."""
    try:
        arguments = _convert(orjson.loads(text), _plan(message_class.DESCRIPTOR), 1)
        return cast(M, message_class(**arguments))
    except (_Unsure, ValueError, TypeError, OverflowError, RecursionError):
        message = cast(M, message_class())  # orjson.JSONDecodeError is a ValueError
        json_format.Parse(text, message, ignore_unknown_fields=True)
        return message
