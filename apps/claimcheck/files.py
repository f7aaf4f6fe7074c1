"""Files in and out of claimcheck: what ``claimcheck send`` reads and ``claimcheck receive`` writes.

A received payload is written to ``DIR/<object id>`` and its pointer's fields and metadata to
``DIR/<object id>.json``, each through a temporary file in the same directory that is flushed,
synced and then renamed, so no half-written file ever appears under its final name (a crash
leaves at most a ``.partial-*`` file, and the pointer is redelivered). The metadata file is
renamed into place first: whoever sees a payload finds its metadata beside it.
"""

import json
import mimetypes
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from claimcheck.consumer import Message

METADATA_SUFFIX = ".json"


def files_to_send(path: Path) -> list[Path]:
    """``path`` itself, or every regular file directly in the directory ``path``, sorted."""
    if path.is_dir():
        return sorted(child for child in path.iterdir() if child.is_file() and not child.name.startswith("."))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither a file nor a directory")
    return [path]


def guess_content_type(path: Path) -> str:
    """The media type of a file by its name, ``application/octet-stream`` when unknown."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def filename_metadata(path: Path) -> dict[str, str]:
    """The file's name as metadata (percent-encoded: metadata values are printable ASCII)."""
    return {"filename": urllib.parse.quote(path.name, safe=" !#$&'()+,;=@[]^`{}~")}


@contextmanager
def _atomic(final: Path) -> Iterator[IO[bytes]]:
    handle, temporary = tempfile.mkstemp(prefix=f".partial-{final.name}-", dir=final.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_received(directory: Path, message: Message) -> Path:
    """Write ``message``'s verified payload and its metadata under ``directory``; return the payload's path."""
    final = directory / message.object_id
    pointer = message.pointer
    document = {"object_id": pointer.object_id, "job": pointer.job, "content_type": pointer.content_type,
                "metadata": message.metadata, "size": pointer.payload_size, "sha256": pointer.payload_sha256,
                "inline": message.inline, "recipients": list(pointer.recipients),
                "created_at": pointer.created_at.isoformat()}
    with _atomic(directory / f"{message.object_id}{METADATA_SUFFIX}") as file:
        file.write(json.dumps(document, indent=2, sort_keys=True).encode())
    with _atomic(final) as file:
        shutil.copyfileobj(message.payload, file, 1024 * 1024)
    return final
