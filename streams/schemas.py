"""JSON Schemas of every record of DESIGN §3, for producers to validate against."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from rollguard.models.events import (
    Alert,
    ApprovalRequest,
    ApprovalResponse,
    DeadLetter,
    Decision,
    DeployEvent,
    MetricSample,
    ReleaseVerdict,
    RollbackCommand,
)

__all__ = ["RECORDS", "export_schemas"]

RECORDS: dict[str, type[BaseModel]] = {
    "deploy": DeployEvent,
    "metric": MetricSample,
    "alert": Alert,
    "approval_response": ApprovalResponse,
    "rollback_command": RollbackCommand,
    "approval_request": ApprovalRequest,
    "decision": Decision,
    "release_verdict": ReleaseVerdict,
    "dead_letter": DeadLetter,
}


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<type>.schema.json`` per record type (validation mode: what we accept)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in RECORDS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://rollguard.dev/schemas/{name}.schema.json"
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
