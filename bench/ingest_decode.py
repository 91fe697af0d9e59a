"""Decode rates of foreign telemetry, as ratios to native JSON decode of the same points.

In one process, the same N data points (SERVICES services × 3 metrics × time steps) are
decoded three ways; each foreign decode is timed right after a native one, ``--repeat`` times,
and the median of those ratios is printed:

(a) native: one rollguard JSON ``MetricSample`` message per point, ``streams.serde.decode``
    (as the worker decodes ``telemetry.metrics``);
(b) OTLP: one ``otlp_proto`` message per time step with every service's points (as a Collector
    batch: per service a resource with three gauges of one point each, the costliest shape
    per point), ``decode_foreign`` (size and clock checks, ``decode_otlp``: the official
    classes, the mapping) + ``SampleBuilder.samples`` → ``MetricSample`` records, exactly what
    the worker does per message; the same again for ``otlp_json`` (the structs of
    ``streams/ingest/otlp_json.py``), and — for comparison in the same run — ``otlp_json``
    read by ``json_format.Parse``, the path for what those structs do not read;
(c) remote-write: one snappy ``WriteRequest`` per time step, ``samples_of`` → records (what
    ``rollguard bridge prometheus`` does per request before publishing).

All three give the same 30,000 (by default) ``MetricSample`` records (checked before timing).
Prints points/s for each and two ratios to (a): the median of the back-to-back pairs' ratios,
and the ratio of each side's best run (the least disturbed on a shared machine). Target: each
ratio >= 0.5.

With ``--bridge`` (and a broker at ``ROLLGUARD_BOOTSTRAP_SERVERS``) it also runs the
Prometheus bridge in-process and posts the remote-write bodies to it over HTTP with
``--senders`` concurrent senders: end-to-end samples/s acknowledged (204 after Kafka's acks).

    .venv/bin/python bench/ingest_decode.py
    .venv/bin/python bench/ingest_decode.py --services 200 --steps 50 --bridge
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cramjam
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rollguard.streams.bridges.prometheus import samples_of  # noqa: E402
from rollguard.streams.bridges.prompb import WriteRequest  # noqa: E402
from rollguard.streams.ingest import otlp  # noqa: E402
from rollguard.streams.ingest.inputs import FanOut, decode_foreign  # noqa: E402
from rollguard.streams.ingest.mapping import MetricRule, OtlpConfig, PrometheusBridge  # noqa: E402
from rollguard.streams.ingest.otlp_json import Unsure  # noqa: E402
from rollguard.streams.ingest.rates import SampleBuilder  # noqa: E402
from rollguard.streams.serde import decode  # noqa: E402
from tests.otlp_messages import encode, gauge, number, request  # noqa: E402

METRICS = ("error_rate", "latency_p99_ms", "request_rate")
T0 = 1_795_593_600.0
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


def values(services: int, steps: int) -> list[list[tuple[str, str, float, float]]]:
    """Per time step: (service, metric, ts, value) for every service and metric."""
    return [[(f"svc-{s:04d}", m, T0 + 10 * t, 0.01 * (s % 7) + t * 0.001)
             for s in range(services) for m in METRICS] for t in range(steps)]


def rate(fn: Callable[[], int]) -> float:
    """Points per second of one run of ``fn`` (which returns the points it decoded)."""
    started = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - started)


def paired(fn: Callable[[], int], base: Callable[[], int], repeat: int
           ) -> tuple[float, float, float]:
    """(median rate of ``fn``, median of its ratio to ``base`` run just before it, ratio of
    the two sides' best runs): pairs taken back to back, so that a busy machine slows both
    sides of each ratio alike; the best runs are the least disturbed ones (as ``timeit``)."""
    rates, references, ratios = [], [], []
    for _ in range(repeat):
        reference = rate(base)
        measured = rate(fn)
        rates.append(measured)
        references.append(reference)
        ratios.append(measured / reference)
    return statistics.median(rates), statistics.median(ratios), max(rates) / max(references)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bridge", action="store_true")
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    steps = values(args.services, args.steps)
    points = sum(len(s) for s in steps)

    native = [(orjson.dumps({"type": "metric", "service": svc, "name": m, "value": v,
                             "ts": ts, "source": "otlp"}), svc.encode())
              for step in steps for svc, m, ts, v in step]
    otlp_config = OtlpConfig(rules=tuple(MetricRule(source=f"app.{m}", metric=m)
                                         for m in METRICS))
    messages = []
    for step in steps:
        by_service: dict[str, list[object]] = {}
        for svc, m, ts, v in step:
            by_service.setdefault(svc, []).append(gauge(f"app.{m}", [number(ts, v)]))
        messages.append(request(*(({"service.name": svc}, metrics)
                                  for svc, metrics in by_service.items())))
    otlp_proto = [encode(m, "otlp_proto") for m in messages]
    otlp_json = [encode(m, "otlp_json") for m in messages]
    prom_config = PrometheusBridge(rules=tuple(MetricRule(source=m, metric=m) for m in METRICS))
    bodies = []
    for step in steps:
        write = WriteRequest()
        for svc, m, ts, v in step:
            series = write.timeseries.add()
            series.labels.add(name="__name__", value=m)
            series.labels.add(name="service", value=svc)
            series.samples.add(value=v, timestamp=int(ts * 1000))
        bodies.append(bytes(cramjam.snappy.compress_raw(write.SerializeToString())))

    def run_native() -> int:
        n = 0
        for value, key in native:
            n += decode(value, key=key, topic="telemetry.metrics", expected_type="metric",
                        reference_time=T0 + 1e9).record is not None
        return n

    def run_otlp(encoded: list[bytes], encoding: str) -> Callable[[], int]:
        headers = [("content-type", b"application/" + (b"json" if encoding == "otlp_json"
                                                        else b"x-protobuf"))]

        def run() -> int:
            builder = SampleBuilder("otlp")
            n = 0
            for value in encoded:
                fan = decode_foreign(value, key=None, headers=headers, topic="otlp_metrics",
                                     partition=0, offset=0, expected="otlp",
                                     otlp=otlp_config, reference_time=T0 + 1e9,
                                     max_clock_skew_seconds=300.0,
                                     max_message_bytes=262144).record
                assert isinstance(fan, FanOut)
                n += len(builder.samples(list(fan.points)))
            return n
        return run

    def run_otlp_json_format() -> int:
        """otlp_json read by json_format.Parse (the path for what the structs do not read)."""
        def refuse(*_: Any) -> Any:
            raise Unsure

        fast = otlp.decoder
        otlp.decoder = refuse  # type: ignore[assignment]
        try:
            return run_otlp(otlp_json, "otlp_json")()
        finally:
            otlp.decoder = fast

    def run_remote_write() -> int:
        builder = SampleBuilder("prometheus")
        return sum(len(samples_of(body, HEADERS, prom_config, builder)[0]) for body in bodies)

    for check in (run_native, run_otlp(otlp_proto, "otlp_proto"),
                  run_otlp(otlp_json, "otlp_json"), run_otlp_json_format, run_remote_write):
        assert check() == points, check
    base, _, _ = paired(run_native, run_native, args.repeat)
    print(f"{points:,} points: {args.services} services x {len(METRICS)} metrics x "
          f"{args.steps} steps ({args.repeat} back-to-back pairs)")
    print(f"  {'':<27} {'median':>12}            ratio to native:")
    print(f"  {'':<27} {'points/s':>12}            median  best/best")
    print(f"  native JSON decode          {base:>12,.0f} points/s   1.00    1.00")
    for name, fn in (("OTLP otlp_proto decode", run_otlp(otlp_proto, "otlp_proto")),
                     ("OTLP otlp_json decode", run_otlp(otlp_json, "otlp_json")),
                     ("  (json_format.Parse path)", run_otlp_json_format),
                     ("remote-write decode", run_remote_write)):
        measured, ratio, best = paired(fn, run_native, args.repeat)
        print(f"  {name:<27} {measured:>12,.0f} points/s   {ratio:.2f}    {best:.2f}")
    if args.bridge:
        asyncio.run(bridge_rate(bodies, points, args.senders))


async def bridge_rate(bodies: list[bytes], points: int, senders: int) -> None:
    """End-to-end: HTTP POST → decode → Kafka (acks) → 204, with ``senders`` in parallel."""
    import aiohttp
    from aiohttp import web

    from rollguard.streams.bridges.prometheus import PrometheusWriteBridge
    from rollguard.streams.settings import load_settings
    from rollguard.streams.topics import create_topics

    rules = [{"source": m, "metric": m} for m in METRICS]
    os.environ["ROLLGUARD_INGEST__PROMETHEUS__RULES"] = orjson.dumps(rules).decode()
    settings = load_settings(topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.")
    await create_topics(settings)
    app = PrometheusWriteBridge(settings).application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api/v1/write"
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    codes: dict[int, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=HEADERS) as answer:
                codes[answer.status] = codes.get(answer.status, 0) + 1

    try:
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            await asyncio.gather(*(sender(session) for _ in range(senders)))
            elapsed = time.perf_counter() - started
    finally:
        await runner.cleanup()
    print(f"  bridge end to end ({senders} senders, {settings.bootstrap_servers}): "
          f"{points / elapsed:,.0f} samples/s acknowledged; answers {codes}")


if __name__ == "__main__":
    main()
