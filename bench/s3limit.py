"""The limit of this stack: the pipeline's S3 work with no broker, no ledger, no gzip, no hashing.

Per object one PUT, one GET per recipient group and one DELETE, through the product's own boto3
client settings and transfer configuration (``claimcheck.store``), laid out like the product's
processes: an uploader process with the producer's upload threads, one reader process per
recipient group with the consumer's worker threads, and a deleter (this process) that deletes an
object once every reader fetched it, as the coordinator's deleter thread does. Hand-offs go
through multiprocessing queues instead of RabbitMQ and PostgreSQL.

    python -m bench.s3limit --bucket B --prefix P --count N --object-size BYTES --groups 2

prints one JSON document: per object the time its PUT finished and the time its DELETE finished.
"""

import argparse
import io
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _client() -> Any:
    from claimcheck import store
    from claimcheck.config import Settings

    return store.client(Settings())


def _uploader(bucket: str, prefix: str, count: int, object_size: int, threads: int, readers: list[Any], events: Any) -> None:
    from claimcheck import store

    s3 = _client()
    body = os.urandom(object_size)

    def put(seq: int) -> None:
        key = f"{prefix}{seq:06d}"
        store.upload(s3, bucket, key, io.BytesIO(body))
        events.put(("put", key, time.time()))
        for reader in readers:
            reader.put(key)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(put, seq) for seq in range(count)]:
            future.result()


def _reader(bucket: str, group: int, threads: int, keys: Any, events: Any) -> None:
    from claimcheck import store

    s3 = _client()
    chunk = getattr(store, "READ_CHUNK", 1024 * 1024)

    def get(key: str) -> None:
        response = s3.get_object(Bucket=bucket, Key=key)
        for _ in response["Body"].iter_chunks(chunk):
            pass
        events.put(("got", key, group))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        while (key := keys.get()) is not None:
            pool.submit(get, key)


def run(bucket: str, prefix: str, count: int, object_size: int, groups: int, upload_threads: int = 2,
        reader_threads: int = 4) -> dict[str, Any]:
    from claimcheck import store

    context = mp.get_context("spawn")
    events = context.Queue()
    reader_queues = [context.Queue() for _ in range(groups)]
    readers = [context.Process(target=_reader, args=(bucket, group, reader_threads, reader_queues[group], events),
                               daemon=True) for group in range(groups)]
    for process in readers:
        process.start()
    s3 = _client()
    started = time.time()
    uploader = context.Process(target=_uploader,
                               args=(bucket, prefix, count, object_size, upload_threads, reader_queues, events),
                               daemon=True)
    uploader.start()
    put_at: dict[str, float] = {}
    got: dict[str, int] = {}
    deleted_at: dict[str, float] = {}
    due: "queue.Queue[str | None]" = queue.Queue()

    def deleter() -> None:  # one thread, like the coordinator's deleter
        while (key := due.get()) is not None:
            store.delete(s3, bucket, key)
            deleted_at[key] = time.time()

    thread = threading.Thread(target=deleter)
    thread.start()
    def next_event() -> tuple[str, str, Any]:
        deadline = time.monotonic() + 600
        while True:
            try:
                return events.get(timeout=1.0)  # type: ignore[no-any-return]
            except queue.Empty:
                dead = [p for p in (uploader, *readers) if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"S3 limit run failed: a worker exited with {dead[0].exitcode}"
                                       if dead else "S3 limit run timed out") from None

    try:
        for _ in range(count * (groups + 1)):
            kind, key, value = next_event()
            if kind == "put":
                put_at[key] = value
            else:
                got[key] = got.get(key, 0) + 1
                if got[key] == groups:
                    due.put(key)
    finally:
        due.put(None)
        thread.join()
        for reader in reader_queues:
            reader.put(None)
        for process in (uploader, *readers):
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    return {
        "started": started,
        "objects": [{"put": put_at[key], "deleted": deleted_at[key]} for key in sorted(deleted_at)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--object-size", type=int, required=True)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--upload-threads", type=int, default=2)
    parser.add_argument("--reader-threads", type=int, default=4)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # daemon workers are terminated on the way out
    result = run(args.bucket, args.prefix, args.count, args.object_size, args.groups, args.upload_threads,
                 args.reader_threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
