"""Where approval notifications go (``config/notify.yaml``), validated at start.

```yaml
webhooks:
  - name: payments-oncall          # names the webhook in logs and dead letters
    url: https://hooks.slack.com/services/...
    format: slack                   # generic | slack | pagerduty
    services: [payments]            # requests of these services ...
    roles: [sre-oncall]             # ... or needing these roles; neither: every request
    headers: {X-Team: payments}     # optional extra headers
    routing_key: ...                # pagerduty only: the Events v2 integration key
retry:
  attempts: 6                       # tries per post, the first included
  initial_backoff_seconds: 0.5      # doubled after each failure ...
  max_backoff_seconds: 30           # ... up to this
  timeout_seconds: 10               # per try
console_url: http://127.0.0.1:9590  # optional: links in the posts
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from rollguard.streams.settings import ConfigError

__all__ = ["NotifyConfig", "RetryPolicy", "Webhook", "load_notify_config"]


class Webhook(BaseModel):
    """One destination and the requests it is told about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    url: HttpUrl
    format: Literal["generic", "slack", "pagerduty"] = "generic"
    services: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    headers: dict[str, str] = Field(default_factory=dict)
    routing_key: str | None = None

    @model_validator(mode="after")
    def _pagerduty_needs_key(self) -> Webhook:
        if self.format == "pagerduty" and not self.routing_key:
            raise ValueError("a pagerduty webhook needs routing_key (the Events v2 "
                             "integration key)")
        return self

    def wants(self, request: dict[str, Any]) -> bool:
        """True when this webhook is told about ``request``."""
        if not self.services and not self.roles:
            return True
        return (request.get("service") in self.services
                or request.get("required_role") in self.roles)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=6, ge=1, le=100)
    initial_backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    timeout_seconds: float = Field(default=10.0, gt=0)

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed try."""
        return float(min(self.initial_backoff_seconds * 2 ** (failures - 1),
                         self.max_backoff_seconds))


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: tuple[Webhook, ...] = Field(min_length=1)
    retry: RetryPolicy = RetryPolicy()
    console_url: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> NotifyConfig:
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError("webhook names must be unique")
        return self


def load_notify_config(path: Path) -> NotifyConfig:
    """Read and validate ``path``; ConfigError names the file, the field and the fix."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the notification config ({err.strerror}); "
                          "pass --config FILE or set ROLLGUARD_NOTIFY_CONFIG") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return NotifyConfig.model_validate(data or {})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']} (see docs/approvals.md for the "
                          "webhook fields)") from None
