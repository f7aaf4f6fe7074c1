"""One ``python -m claimcheck ...`` process of a scenario, and what its log says happened."""

import json
import re
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from claimcheck.childprocess import ChildProcess

REPO = Path(__file__).resolve().parents[3]

# Log lines the components write (apps/claimcheck): a confirmed pointer, a confirmed business ACK.
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
PUBLISHED = re.compile(r"published object (?P<object_id>[0-9a-f]{32}) of job (?P<job>\S+)")
ACKED = re.compile(r"verified and acked object (?P<object_id>[0-9a-f]{32}) of job (?P<job>\S+)")
# A pointer redelivered after its object was deleted with this recipient's ACK counted (its
# delivery-ack was lost with a connection), or an object of a redelivered pointer batch whose
# ACK this recipient had sent: the consumer asks the coordinator and settles it.
SETTLED = re.compile(r"object (?P<object_id>[0-9a-f]{32}) (was deleted|of a redelivered batch): \S+ confirmed it before; "
                     r"settling the redelivered")
DEAD_LETTERED = re.compile(r"dead-lettered message (?P<message_id>\S+) from (?P<queue>\S+): (?P<reason>.*)")


def parse_log_line(line: str) -> tuple[float, str] | None:
    """(epoch seconds, message) of a component's log line: JSON (``CLAIMCHECK_LOG_FORMAT=json``,
    what the harness asks for) or the terminal text format (components run with TZ=UTC)."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
            return datetime.fromisoformat(record["time"]).timestamp(), str(record.get("message", ""))
        except (ValueError, KeyError, TypeError):
            return None
    match = _LOG_TIME.match(line)
    if not match:
        return None
    at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc).timestamp()
    return at, line[match.end() :]


class Component(ChildProcess):
    """One ``python -m claimcheck ...`` process; restartable, logging to one file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, http_port: int | None = None) -> None:
        self.http_port = http_port
        super().__init__(name, [sys.executable, "-m", "claimcheck", *args], log_path, env=env, cwd=REPO)

    def events(self, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
        """(time, match) of every log line matching ``pattern``."""
        found = []
        for line in self.log_text().splitlines():
            parsed = parse_log_line(line)
            if parsed is not None:
                match = pattern.search(parsed[1])
                if match:
                    found.append((parsed[0], match))
        return found

    def messages(self) -> list[str]:
        return [parsed[1] for line in self.log_text().splitlines() if (parsed := parse_log_line(line))]

    def metrics(self) -> dict[str, float]:
        """This process's Prometheus metrics, ``name{label="v",...}`` -> value (empty while unreachable)."""
        assert self.http_port is not None, f"{self.name} has no HTTP endpoint"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = sample.value
        return values
