"""HTTP bridges that publish foreign telemetry to rollguard's input topics (docs/ingest.md)."""
