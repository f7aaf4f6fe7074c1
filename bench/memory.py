"""Peak resident memory of the producer and the consumer for growing payloads.

Each repetition starts a fresh ``claimcheck producer`` (``--count 2``, so with the default
``--parallelism 2`` two payloads are in flight at once) and then a fresh ``claimcheck consumer``
that verifies both; each process's peak RSS is ``ru_maxrss`` from ``os.wait4`` when it exits.
No coordinator runs in this vhost; the benchmark removes the objects itself.
"""

import contextlib
import time
from pathlib import Path
from typing import Any

from bench.stack import BenchEnv, delete_prefix, mgmt, quote

MiB = 1024 * 1024
ACK_QUEUE = "claimcheck.coordinator.acks"


class Memory:
    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.recipient = f"{env.run_id}-m"
        self.amqp_url = env.vhost("mem", [self.recipient])
        self.vhost = f"ccbench-{env.run_id}-mem"
        self.child_env = env.env(self.amqp_url)
        self._seq = 0

    @staticmethod
    def _verified(log_path: Path, job: str) -> int:
        """Objects of ``job`` the consumer verified and settled: it logs each after its business
        ACK was confirmed (ACKs travel in batches, so the ACK queue's depth does not count them)."""
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return sum(1 for line in text.splitlines() if "verified and acked object" in line and f'of job {job}"' in line)

    def _purge(self) -> None:
        for queue in ("claimcheck.coordinator.pointers", ACK_QUEUE, f"claimcheck.pointers.{self.recipient}"):
            with contextlib.suppress(OSError):
                mgmt("DELETE", f"/api/queues/{quote(self.vhost)}/{quote(queue)}/contents")

    def measure(self, size: int, count: int = 2) -> dict[str, Any]:
        self._seq += 1
        job = f"{self.env.run_id}-mem-{self._seq:03d}"
        result: dict[str, Any] = {"size": size, "count": count, "error": ""}
        try:
            producer = self.env.claimcheck(f"mem-producer-{self._seq:03d}", [
                "producer", "--job", job, "--count", str(count), "--size", str(size), "--recipients", self.recipient,
                "--no-verify"], self.child_env, measure=True)
            finished = producer.wait(120 + count * size / MiB)
            if finished.returncode != 0:
                raise RuntimeError(f"producer failed: {finished.output[-1000:]}")
            result.update(producer_rss=finished.maxrss_bytes, producer_seconds=finished.seconds,
                          producer_cpu=finished.cpu_seconds)
            consumer = self.env.claimcheck(f"mem-consumer-{self._seq:03d}",
                                           ["consumer", "--recipient", self.recipient], self.child_env,
                                           measure=True)
            started = time.monotonic()
            deadline = started + 120 + count * size / MiB
            while self._verified(consumer.log_path, job) < count:
                if consumer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"consumer did not verify {count} objects: {consumer.log_path}")
                time.sleep(0.1)
            verify_seconds = time.monotonic() - started
            done = consumer.stop()
            result.update(consumer_rss=done.maxrss_bytes, consumer_seconds=verify_seconds,
                          consumer_cpu=done.cpu_seconds)
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            result["error"] = str(exc)[:500]
        finally:
            self._purge()
            delete_prefix(self.env.bucket, f"{job}/")
        return result
