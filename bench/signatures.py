"""What a signature costs per message: Ed25519 (pointers and intents) against HMAC-SHA256 (ACKs),
signing and verifying the same real message bodies, in this process, back to back.

    python -m bench.signatures      # prints a table, writes docs/bench/signatures.json

Why it matters: a producer signs two Ed25519 messages per object (intent, pointer) and every
consumer and coordinator verifies them; the coordinator verifies every ACK, thousands a second,
which is why ACKs stay HMAC (docs/security.md).
"""

import json
import time
from collections.abc import Callable
from pathlib import Path

from claimcheck.config import Settings
from claimcheck.localstack import ports
from claimcheck.protocol import Ack, make_pointer, now, object_key

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 5


def _per_op(call: Callable[[], object], count: int) -> float:
    """Best of ROUNDS: microseconds per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def measure(count: int = 2000) -> dict[str, float]:
    settings = Settings(amqp_url=f"amqp://guest:guest@{ports.HOST}:{ports.LOCAL.amqp}/%2F")  # a broker on loopback
    object_id = "0" * 32
    pointer = make_pointer(object_id=object_id, job="bench", bucket="claimcheck", key=object_key("bench", object_id),
                           payload_size=1 << 20, payload_sha256="a" * 64, object_size=1 << 19, object_sha256="b" * 64,
                           recipients=["audit", "billing"]).encode()
    ack = Ack(object_id=object_id, job="bench", recipient="billing", payload_sha256="a" * 64, consumer="c",
              acked_at=now()).encode()
    pointer_signer, ack_signer = settings.pointer_signer(), settings.ack_signer("billing")
    verifier = settings.coordinator_verifier()
    pointer_headers, ack_headers = pointer_signer.sign(pointer), ack_signer.sign(ack)
    return {
        "ed25519_sign_us": _per_op(lambda: pointer_signer.sign(pointer), count),
        "ed25519_verify_us": _per_op(lambda: verifier.verify(pointer, pointer_headers), count),
        "hmac_sign_us": _per_op(lambda: ack_signer.sign(ack), count),
        "hmac_verify_us": _per_op(lambda: verifier.verify(ack, ack_headers), count),
        "pointer_bytes": len(pointer),
        "ack_bytes": len(ack),
    }


def main() -> None:
    results = measure()
    out = REPO / "docs" / "bench" / "signatures.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"{'operation':<22} {'µs per message':>15}")
    for name, value in results.items():
        if name.endswith("_us"):
            print(f"{name.removesuffix('_us'):<22} {value:>15.1f}")
    ratio = results["ed25519_verify_us"] / results["hmac_verify_us"]
    print(f"Ed25519 verify / HMAC verify: {ratio:.1f}x; written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
