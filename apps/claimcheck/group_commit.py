"""Group commit on the broker: what several threads hand in, published together.

Each caller hands an item to :meth:`GroupCommit.submit` (or :meth:`GroupCommit.confirm`,
which also waits). One thread publishes whatever is waiting as one signed message and waits for
the broker's confirm; items that arrive meanwhile form the next message. So under load one
enqueue (a Raft command on three nodes) and one settlement by the reader cover several items.
``linger`` lets the first item of a message wait that long for company, as long as more is on
its way (:meth:`GroupCommit._company_coming`); with none, an idle caller adds no delay. Items
travel only with items of the same routing key (``route``: the coordinator shard they belong
to), so a message never carries what another shard owns, and only with items in the same
company (:meth:`GroupCommit._company`: pointers for the same groups).

An item counts as sent only once its message was confirmed: the error of a failed publish
reaches every caller of that message, exactly as if each had published alone. Used for the
consumers' business ACKs (:mod:`claimcheck.ack_batcher`), the producers' intents
(:class:`claimcheck.producer.IntentBatcher`) and their pointers (:class:`claimcheck.producer.PointerBatcher`).
"""

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from claimcheck.publisher import BrokerSession
from claimcheck.signing import Signer

T = TypeVar("T")


@dataclass(frozen=True)
class _Waiting(Generic[T]):
    item: T
    sent: "Future[None]"


class GroupCommit(ABC, Generic[T]):
    """Publishes items handed in by several threads, several per signed message.

    Subclasses say how items become one message (:meth:`_encode`) and which items are the
    same (:meth:`_identity`: an item handed in twice while its first copy waits travels once).
    """

    def __init__(self, publisher: BrokerSession, signer: Signer, exchange: str, route: Callable[[T], str],
                 max_batch: int, name: str, linger: float = 0.0) -> None:
        self._publisher = publisher
        self._signer = signer
        self._exchange = exchange
        self._route = route
        self._max_batch = max(1, max_batch)
        self._linger = linger
        self._waiting: queue.SimpleQueue[list[_Waiting[T]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._state = "new"  # -> "running" -> "closed"
        self.batches = 0  # messages published, for tests and logs

    def submit(self, item: T) -> "Future[None]":
        """Hand ``item`` over; the future is done once the broker confirmed the message carrying
        it, or failed with that message's error."""
        (sent,) = self.submit_all([item])
        return sent

    def submit_all(self, items: list[T]) -> "list[Future[None]]":
        """Hand ``items`` over together: they travel in as few messages as the batch size allows."""
        waiting = [_Waiting(item, Future()) for item in items]
        with self._lock:
            if self._state == "closed":
                raise RuntimeError(f"the {self._thread.name} publisher is closed")
            if self._state == "new":
                self._thread.start()
                self._state = "running"
            self._waiting.put(waiting)
        return [each.sent for each in waiting]

    def _nudge(self) -> None:
        """Make the publishing thread look again whether company is coming (see _company_coming)."""
        with self._lock:
            if self._state == "running":
                self._waiting.put([])

    def confirm(self, item: T, timeout: float | None = None) -> None:
        """Publish ``item``; return once the broker confirmed the message carrying it, else raise."""
        self.submit(item).result(timeout)

    def close(self) -> None:
        """Stop the publishing thread once what is waiting was published."""
        with self._lock:
            running, self._state = self._state == "running", "closed"
            if running:
                self._waiting.put(None)
        if running:
            self._thread.join(timeout=30)
        self._publisher.close()

    @abstractmethod
    def _encode(self, items: list[T]) -> tuple[bytes, str]:
        """The body and message id of one message carrying ``items`` (distinct, at least one)."""

    @abstractmethod
    def _identity(self, item: T) -> Hashable:
        """What makes two items the same."""

    def _company(self, item: T) -> Hashable:
        """Items of one message share this (besides their routing key); by default anything goes."""
        return None

    def _company_coming(self) -> bool:
        """Whether more items are on their way, so the first one's linger is worth waiting; by
        default always."""
        return True

    def _headers(self, items: list[T]) -> dict[str, object]:
        """Headers of the message carrying ``items``, besides the signature."""
        return {}

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            if not first:
                continue  # a nudge while nothing waits
            batch = list(first)
            closing = False
            company_until = time.monotonic() + self._linger
            while len(batch) < self._max_batch:
                wait = company_until - time.monotonic() if self._company_coming() else 0.0
                try:
                    more = self._waiting.get(timeout=wait) if wait > 0 else self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.extend(more)
            self._publish(batch)
            if closing:
                return

    def _publish(self, batch: list[_Waiting[T]]) -> None:
        """One confirmed message per routing key and company in ``batch`` (or more, of at most
        ``max_batch`` items each)."""
        routes: dict[tuple[str, Hashable], list[_Waiting[T]]] = {}
        for waiting in batch:
            routes.setdefault((self._route(waiting.item), self._company(waiting.item)), []).append(waiting)
        for (routing_key, _), same_route in routes.items():
            for start in range(0, len(same_route), self._max_batch):
                self._publish_one(routing_key, same_route[start:start + self._max_batch])

    def _publish_one(self, routing_key: str, batch: list[_Waiting[T]]) -> None:
        """One confirmed message for ``batch``; its outcome is every waiting caller's."""
        unique = list({self._identity(waiting.item): waiting.item for waiting in batch}.values())
        try:
            body, message_id = self._encode(unique)
            self._publisher.publish(self._exchange, routing_key, body, message_id=message_id,
                                    headers={**self._headers(unique), **self._signer.sign(body)})
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, which decide what it means
            for waiting in batch:
                waiting.sent.set_exception(exc)
            return
        self.batches += 1
        for waiting in batch:
            waiting.sent.set_result(None)
