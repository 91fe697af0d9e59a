"""Telemetry as teams already have it: OTLP metrics on Kafka, CDEvents deploy events.

``mapping`` is the configuration (the ``ingest:`` section of ``config/rollguard.yaml``),
``otlp`` decodes OTLP metrics into points, ``rates`` turns points into ``MetricSample`` records,
``cdevents`` maps CloudEvents-wrapped CDEvents to ``DeployEvent``, ``inputs`` is what the worker
calls per message. See docs/ingest.md.
"""
