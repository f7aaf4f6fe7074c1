import gzip
import hashlib
import json

import pytest

from claimcheck.payload import CHUNK_SIZE, GzipHashingReader, generate, minimum_size


@pytest.mark.parametrize("size", [minimum_size("j", "0" * 32, 7), 1000, CHUNK_SIZE - 1, CHUNK_SIZE * 3 + 17])
def test_payload_is_valid_json_of_the_exact_size(size: int) -> None:
    body = b"".join(generate(size, "j", "0" * 32, 7))
    assert len(body) == size
    document = json.loads(body)
    assert (document["job"], document["object_id"], document["seq"]) == ("j", "0" * 32, 7)


def test_too_small_a_size_is_refused() -> None:
    with pytest.raises(ValueError, match="below the minimum"):
        list(generate(10, "j", "0" * 32, 0))


def test_chunks_stay_bounded() -> None:
    assert max(len(chunk) for chunk in generate(5 * CHUNK_SIZE, "j", "0" * 32, 0)) <= CHUNK_SIZE


def test_gzip_reader_measures_both_forms_and_hashes_the_payload() -> None:
    reader = GzipHashingReader(generate(300_000, "j", "0" * 32, 1))
    compressed = b""
    while chunk := reader.read(4096):
        compressed += chunk
    payload = gzip.decompress(compressed)
    assert reader.payload_size == len(payload) == 300_000
    assert reader.payload_hash.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert reader.object_size == len(compressed)
    assert len(compressed) < len(payload)


@pytest.mark.parametrize("sizes", [[5 * CHUNK_SIZE], [1, 7, 65536, 3 * CHUNK_SIZE, 13], [-1]])
def test_gzip_reader_gives_exact_reads_of_any_size_and_the_rest_at_the_end(sizes: list[int]) -> None:
    """s3transfer reads parts of exactly the part size, and everything left for the last one."""
    reader = GzipHashingReader(generate(4 * CHUNK_SIZE + 5, "j", "0" * 32, 2))
    pieces = [reader.read(size) for size in sizes] + [reader.read()]
    compressed = b"".join(pieces)
    offset = 0
    for size, piece in zip(sizes, pieces, strict=False):
        assert len(piece) == (len(compressed) - offset if size < 0 else min(size, len(compressed) - offset))
        offset += len(piece)
    assert reader.readinto(bytearray(100)) == 0 and reader.read(10) == b""
    assert len(gzip.decompress(compressed)) == 4 * CHUNK_SIZE + 5
    assert reader.object_size == len(compressed)
