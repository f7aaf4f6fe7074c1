"""``Delivery.delivery_count`` is total: a forged ``x-delivery-count`` header of any type reads as 0."""

from typing import Any

import pika
import pytest

from claimcheck.amqp_loop import Delivery


def delivery(headers: Any) -> Delivery:
    return Delivery(channel=None, queue="q", delivery_tag=1, redelivered=True,  # type: ignore[arg-type]
                    properties=pika.BasicProperties(headers=headers), body=b"")


@pytest.mark.parametrize(
    "value",
    ["abc", "3", b"3", b"\xff", {"a": 1}, [1, 2], 2**70, -1, -(2**70), 1.5, float("nan"), None, True],
    ids=repr,
)
def test_a_forged_delivery_count_reads_as_zero(value: Any) -> None:
    assert delivery({"x-delivery-count": value}).delivery_count == 0


@pytest.mark.parametrize("headers", [None, {}, "not a table", [("x-delivery-count", 3)]], ids=repr)
def test_missing_or_malformed_headers_read_as_zero(headers: Any) -> None:
    assert delivery(headers).delivery_count == 0


def test_the_brokers_count_is_read() -> None:
    assert delivery({"x-delivery-count": 4}).delivery_count == 4
    assert delivery({"x-delivery-count": 0}).delivery_count == 0
