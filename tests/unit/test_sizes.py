import pytest

from claimcheck.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("512B", 512),
        ("64KB", 64_000),
        ("64kb", 64_000),
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        ("1.5MiB", 1_572_864),
        ("2GB", 2_000_000_000),
        ("1GiB", 2**30),
        (" 10 MB ", 10_000_000),
    ],
)
def test_parses_decimal_and_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "expected a number"),
        ("", "expected a number"),
        ("-1MB", "expected a number"),
        ("1XB", "invalid size unit"),
        ("0", "at least 1 byte"),
        ("65GiB", "64 GiB limit"),
    ],
)
def test_rejects_bad_sizes_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


def test_formats_binary_units() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1_048_576) == "1.0 MiB"
    assert format_size(3 * 2**30) == "3.0 GiB"
