"""What an application may send: bytes, a binary file object, a path, or an iterable of chunks.

Each becomes a :class:`Source`: a way to read the payload as chunks of at most ``CHUNK_SIZE``
without holding it whole. Bytes and paths can be read again (an upload interrupted by an S3
outage is retried from the start); a file object can be when it is seekable; a generator cannot,
so its upload is tried once (botocore still retries each request, each part being in memory).
"""

import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Union

CHUNK_SIZE = 1024 * 1024

# What ``Producer.send`` accepts. A ``str`` is refused: it could be a path or text.
Data = Union[bytes, bytearray, memoryview, BinaryIO, "os.PathLike[str]", Iterable[bytes]]


@dataclass
class Source:
    """A payload as chunks; ``chunks()`` may be called again only if ``replayable``."""

    chunks: Callable[[], Iterator[bytes]]
    replayable: bool


def source_of(data: Data) -> Source:
    """The :class:`Source` of ``data``; TypeError for anything ``Producer.send`` does not accept."""
    if isinstance(data, str):
        raise TypeError("send() takes bytes, a binary file, a pathlib.Path or an iterable of bytes, not str "
                        "(use pathlib.Path(...) for a file, or .encode() for text)")
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        return Source(lambda: (bytes(view[start:start + CHUNK_SIZE]) for start in range(0, len(view), CHUNK_SIZE)),
                      replayable=True)
    if isinstance(data, os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        return Source(lambda: _file_chunks(path), replayable=True)
    if isinstance(data, io.IOBase) or hasattr(data, "read"):
        return _file_object(data)  # type: ignore[arg-type]  # anything with read(): checked chunk by chunk
    if isinstance(data, Iterable):
        iterator = iter(data)
        return Source(lambda: _checked_chunks(iterator), replayable=False)
    raise TypeError(f"send() cannot send a {type(data).__name__}")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        yield from iter(lambda: file.read(CHUNK_SIZE), b"")


def _file_object(file: IO[Any]) -> Source:
    if isinstance(getattr(file, "encoding", None), str):  # a text file decodes: its chunks would be str
        raise TypeError("send() needs a binary file (open it with 'rb')")
    seekable = file.seekable() if hasattr(file, "seekable") else False
    start = file.tell() if seekable else 0

    def chunks() -> Iterator[bytes]:
        if seekable:
            file.seek(start)
        return _checked_chunks(iter(lambda: file.read(CHUNK_SIZE), b""))

    return Source(chunks, replayable=seekable)


def _checked_chunks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"payload chunks must be bytes, got {type(chunk).__name__}")
        if chunk:
            yield bytes(chunk)


def peek(source: Source, limit: int) -> tuple[bytes | None, Source]:
    """Read up to ``limit + 1`` bytes: the whole payload if it has at most ``limit`` bytes (else
    None), and a source that still yields every byte from the start."""
    chunks = source.chunks()
    head: list[bytes] = []
    taken = 0
    for chunk in chunks:
        head.append(chunk)
        taken += len(chunk)
        if taken > limit:
            break
    if taken <= limit:
        return _whole(b"".join(head))
    if source.replayable:
        return None, source
    started = itertools.chain(head, chunks)
    return None, Source(lambda: started, replayable=False)


def _whole(data: bytes) -> tuple[bytes, Source]:
    return data, Source(lambda: iter([data] if data else []), replayable=True)
