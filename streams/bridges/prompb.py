"""Prometheus remote-write 1.0 protobuf messages (``prompb``), as protobuf classes.

The messages are those of Prometheus' ``prompb/remote.proto`` and ``prompb/types.proto``
(the fields remote-write 1.0 sends: series with labels and float samples; exemplars, native
histograms and metadata are read and ignored). No maintained PyPI package ships them alone, so
the file descriptor is declared here and the classes are made by the protobuf runtime — the
same classes ``protoc`` would generate, with the official field numbers.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["Label", "Sample", "TimeSeries", "WriteRequest"]

_F = descriptor_pb2.FieldDescriptorProto


def _message(file: Any, name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
    msg = file.message_type.add(name=name)
    for field_name, number, kind, label, type_name in fields:
        field = msg.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="rollguard/prompb/remote.proto",
                                              package="prometheus", syntax="proto3")
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    _message(file, "Label", [("name", 1, _F.TYPE_STRING, opt, None),
                             ("value", 2, _F.TYPE_STRING, opt, None)])
    _message(file, "Sample", [("value", 1, _F.TYPE_DOUBLE, opt, None),
                              ("timestamp", 2, _F.TYPE_INT64, opt, None)])
    _message(file, "TimeSeries", [("labels", 1, _F.TYPE_MESSAGE, rep, ".prometheus.Label"),
                                  ("samples", 2, _F.TYPE_MESSAGE, rep, ".prometheus.Sample")])
    _message(file, "WriteRequest", [
        ("timeseries", 1, _F.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
            for name in ("Label", "Sample", "TimeSeries", "WriteRequest")}


_CLASSES = _build()
Label: Any = _CLASSES["Label"]
Sample: Any = _CLASSES["Sample"]
TimeSeries: Any = _CLASSES["TimeSeries"]
WriteRequest: Any = _CLASSES["WriteRequest"]
