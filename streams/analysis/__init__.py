"""Analysis of rollguard's decisions, offline: the analyst's side of replay (issue 5).

| module | responsibility |
|---|---|
| ``timerange``  | ``--since/--until`` text → epoch seconds |
| ``kafka_range`` | a time range of the input topics, via offsets-for-times, merged in event time |
| ``session``    | one replay run over lines (file or Kafka): outputs, decisions, timeline tap |
| ``labels``     | final action per deployment; scoring against a §9 labels file |
| ``compare``    | two policies over the same events: what changed and which thresholds did it |
| ``tables``     | the scorecard and the comparison as rich tables |
| ``timeline``   | per-deployment window statistics recomputed from the input events |
| ``plots``      | matplotlib (Agg) figures as PNG bytes |
| ``report``     | one self-contained HTML file |
| ``progress``   | a rich progress bar on stderr when stderr is a terminal |
"""
