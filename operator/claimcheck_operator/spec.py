"""The ``ClaimCheckJob`` spec as typed values, with the CRD's defaults.

The API server applies the CRD defaults and validation; this parser applies the same
defaults again so the operator never depends on them (older clusters, tests against an
API emulator) and fails with a readable message instead of a KeyError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

SIZE_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class ProducerSpec:
    count: int
    message_size: str = "1MB"
    verify: bool = True
    parallelism: int = 1
    rate_per_second: int = 0


@dataclasses.dataclass(frozen=True)
class Recipient:
    name: str
    replicas: int = 1


@dataclasses.dataclass(frozen=True)
class RunSpec:
    producer: ProducerSpec
    recipients: tuple[Recipient, ...]
    image: str = ""
    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def recipient_names(self) -> list[str]:
        return [r.name for r in self.recipients]


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"spec.{field} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_spec(spec: Mapping[str, Any]) -> RunSpec:
    """Typed spec with defaults applied; ValueError with the offending field otherwise."""
    producer = spec.get("producer") or {}
    size = str(producer.get("messageSize", "1MB"))
    if not SIZE_PATTERN.match(size):
        raise ValueError(f"spec.producer.messageSize {size!r} is not a size like 64KB, 1MB or 1MiB")
    if "count" not in producer:
        raise ValueError("spec.producer.count is required")
    recipients_raw = spec.get("recipients") or []
    if not recipients_raw:
        raise ValueError("spec.recipients needs at least one recipient group")
    recipients: list[Recipient] = []
    for index, item in enumerate(recipients_raw):
        name = str(item.get("name", ""))
        if not DNS_LABEL.match(name) or len(name) > 63:
            raise ValueError(f"spec.recipients[{index}].name {name!r} is not a DNS label")
        if name in {r.name for r in recipients}:
            raise ValueError(f"spec.recipients[{index}].name {name!r} is listed twice")
        recipients.append(Recipient(name=name, replicas=_int(item.get("replicas", 1), f"recipients[{index}].replicas", 1)))
    return RunSpec(
        producer=ProducerSpec(
            count=_int(producer["count"], "producer.count", 1),
            message_size=size,
            verify=bool(producer.get("verify", True)),
            parallelism=_int(producer.get("parallelism", 1), "producer.parallelism", 1),
            rate_per_second=_int(producer.get("ratePerSecond", 0), "producer.ratePerSecond", 0),
        ),
        recipients=tuple(recipients),
        image=str(spec.get("image") or ""),
        resources=dict(spec.get("resources") or {}),
    )


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A stable fingerprint of a spec, to tell later whether it changed after the Jobs were built."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
