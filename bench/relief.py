"""Broker relief: the same payloads inline through quorum queues versus as claim-check pointers.

Both modes publish into a vhost of their own with nobody consuming, so what the broker must
hold and write is the whole backlog: inline, every payload into each of the recipient queues;
as pointers, the product's producer (``claimcheck producer``: gzip, S3 upload, pointer publish)
into the coordinator's queue and each recipient queue. Measured per mode: publish throughput
(payloads handed over per second, as the sender sees it), bytes the three RabbitMQ nodes wrote to
storage (``/proc/<pid>/io`` write_bytes, and the nodes' ``rabbitmq_io_write_bytes_total``), and
the growth of the nodes' resident memory (sampled every 0.1 s). Queues are deleted between runs.
"""

import contextlib
import json
import logging
import re
import time
from typing import Any

from bench.pipeline import producer_summary
from bench.stack import PYTHON, BenchEnv, BrokerSampler, broker_settings, delete_prefix, mgmt, quote

log = logging.getLogger("bench")
MiB = 1024 * 1024
_PUBLISHED = re.compile(r"published (\d+) pointers in ([0-9.]+) s")


class Relief:
    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.recipients = [f"{env.run_id}-r1", f"{env.run_id}-r2"]
        self.amqp_url = env.vhost("relief", self.recipients)
        self.vhost = f"ccbench-{env.run_id}-relief"
        self.child_env = env.env(self.amqp_url)
        self._seq = 0

    def _delete_queues(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(OSError):  # not declared yet
                mgmt("DELETE", f"/api/queues/{quote(self.vhost)}/{quote(name)}")

    def _pointer_queues(self) -> list[str]:
        return ["claimcheck.coordinator.pointers"] + [f"claimcheck.pointers.{name}" for name in self.recipients]

    def _inline_queues(self) -> list[str]:
        return [f"bench.inline.{name}" for name in self.recipients]

    def measure(self, mode: str, size: int, count: int, settle: float = 1.0) -> dict[str, Any]:
        self._seq += 1
        result: dict[str, Any] = {"mode": mode, "size": size, "count": count, "error": ""}
        sampler = BrokerSampler().start()
        if mode == "inline":
            proc = self.env.spawn(f"relief-inline-{self._seq:03d}", [
                PYTHON, "-m", "bench.inline", "--url", self.amqp_url, "--queues", ",".join(self._inline_queues()),
                "--size", str(size), "--count", str(count)], self.child_env, measure=True)
        else:
            self.env.provision(self.amqp_url, self.recipients)  # the last pointer run deleted the queues
            job = f"{self.env.run_id}-relief-{self._seq:03d}"
            proc = self.env.claimcheck(f"relief-pointer-{self._seq:03d}", [
                "producer", "--job", job, "--count", str(count), "--size", str(size),
                "--recipients", ",".join(self.recipients), "--no-verify"], self.child_env, measure=True)
        try:
            finished = proc.wait(300 + count * size / MiB)
        except TimeoutError as exc:
            proc.stop()
            finished = None
            result["error"] = str(exc)
        time.sleep(settle)
        usage = sampler.stop()
        if finished is not None:
            if mode == "inline":
                document = producer_summary(finished.output)
                result["error"] = document.get("error", "") or ("" if finished.returncode == 0 else finished.output[-500:])
                published, seconds = int(document.get("published", 0)), float(document.get("seconds", 0.0))
            else:
                match = _PUBLISHED.search(finished.output)
                published, seconds = (int(match[1]), float(match[2])) if match else (0, 0.0)
                if finished.returncode != 0:
                    result["error"] = finished.output[-500:]
            result.update(published=published, seconds=seconds,
                          msgs_per_s=published / seconds if seconds else float("nan"),
                          mib_per_s=published * size / MiB / seconds if seconds else float("nan"),
                          sender_rss=finished.maxrss_bytes)
        result.update(write_bytes=usage.write_bytes, prom_io_write_bytes=usage.prom_io_write_bytes,
                      rss_growth=usage.rss_growth, rss_start=usage.rss_start, node_rss_peak=usage.node_rss_peak,
                      nodes_restarted=usage.nodes_restarted)
        self._delete_queues(self._inline_queues() if mode == "inline" else self._pointer_queues())
        if mode == "pointer":
            delete_prefix(self.env.bucket, f"{self.env.run_id}-relief-{self._seq:03d}/")
        return result

    def max_message_probe(self) -> dict[str, Any]:
        """One inline message one byte over the broker's max_message_size, and what happens."""
        settings = broker_settings()
        limit = settings.get("max_message_size_bytes") or 128 * MiB
        started = time.monotonic()
        proc = self.env.spawn("relief-max-message", [
            PYTHON, "-m", "bench.inline", "--url", self.amqp_url, "--queues", ",".join(self._inline_queues()),
            "--size", str(limit + 1), "--count", "1"], self.child_env)
        finished = proc.wait(300)
        self._delete_queues(self._inline_queues())
        document = producer_summary(finished.output)
        return {"limit": limit, "size": limit + 1, "published": document.get("published"),
                "error": document.get("error") or finished.output[-300:], "seconds": time.monotonic() - started,
                "settings": settings}


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
