"""What a person at a terminal sees: structured logs, the producer's progress, ``claimcheck status``."""

import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from claimcheck import logsetup
from claimcheck.progressbar import progress

ROOT = Path(__file__).resolve().parents[2]


def _log_with(formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("observability-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("verified object %s", "9f0c", extra=logsetup.fields(object_id="9f0c", job="run-1", recipient=None))
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_logs_carry_object_id_and_job() -> None:
    record = json.loads(_log_with(logsetup.JsonFormatter("consumer[billing]")))
    assert record["message"] == "verified object 9f0c"
    assert (record["object_id"], record["job"], record["component"], record["level"]) == (
        "9f0c", "run-1", "consumer[billing]", "WARNING")
    assert "recipient" not in record


def test_json_logs_keep_structured_values_and_the_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.JsonFormatter("coordinator"))
    logger = logging.getLogger("observability-test-structured")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("ledger said no")
        except ValueError:
            logger.exception("applying failed", extra={"acked": {"billing": 2}, "object_id": "9f0c"})
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["acked"] == {"billing": 2} and record["object_id"] == "9f0c" and record["logger"].endswith("structured")
    assert "ValueError: ledger said no" in record["exception"]
    assert datetime.fromisoformat(record["time"]).tzinfo is not None


def test_text_logs_append_context_not_in_the_message() -> None:
    line = _log_with(logsetup.TextFormatter("consumer[billing]"))
    assert line.rstrip().endswith("[job=run-1]") and "object_id" not in line


def test_progress_without_a_terminal_prints_plain_lines() -> None:
    stream = io.StringIO()
    with progress("published", 4, stream=stream, every=3600, tty=False) as tick:
        for _ in range(4):
            tick(1000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and re.match(r"published 4/4 objects \(100%\), .*objects/s$", lines[0]), lines


def test_progress_on_a_terminal_draws_a_bar() -> None:
    stream = io.StringIO()
    with progress("published", 3, stream=stream, tty=True) as tick:
        for _ in range(3):
            tick(10)
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue()


def test_status_prints_runs_pending_and_dead_letters() -> None:
    result = subprocess.run([sys.executable, "-m", "claimcheck", "status"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "pending objects per recipient" in result.stdout
    assert re.search(r"^dead letters: \d+ in claimcheck\.dead-letters$", result.stdout, re.M), result.stdout
