"""Bad arguments and configuration end in one readable line and exit code 2, before any
service is contacted."""

import os
import subprocess
import sys

import pytest


def claimcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claimcheck", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["producer", "--size", "abc"], {}, "Invalid value for '--size': invalid size 'abc'"),
        (["producer"], {"MSG_SIZE": "12XB"}, "invalid size unit 'XB'"),
        (["producer", "--count", "-1"], {}, "Invalid value for '--count': -1 is not in the range"),
        (["producer"], {"COUNT": "zero"}, "Invalid value for '--count'"),
        (["producer", "--recipients", "Billing"], {}, "invalid recipient 'Billing'"),
        (["producer", "--recipients", "a,a"], {}, "recipients must not repeat"),
        (["producer", "--recipients", "coordinator"], {}, "reserved"),
        (["producer", "--recipients", "billing,mallory"], {"CLAIMCHECK_RECIPIENTS": "billing,audit"},
         "unknown recipient 'mallory'; configured recipients: audit, billing"),
        (["consumer", "--recipient", "mallory"], {"CLAIMCHECK_RECIPIENTS": "billing"}, "unknown recipient 'mallory'"),
        (["consumer", "--recipient", "a,b"], {}, "exactly one recipient expected"),
        (["consumer", "--job", "j"], {}, "--job and --expect go together"),
        (["consumer", "--hook", "nomodule"], {}, "expected module:function"),
        (["producer", "--job", "../etc"], {}, "invalid job '../etc'"),
        (["producer"], {"CLAIMCHECK_HTTP_PORT": "abc"}, "invalid configuration CLAIMCHECK_HTTP_PORT"),
        (["coordinator"], {"CLAIMCHECK_COORDINATOR_SHARDS": "2", "CLAIMCHECK_COORDINATOR_SHARD_IDS": "0,2"},
         "invalid configuration CLAIMCHECK_COORDINATOR_SHARD_IDS: Value error, '0,2': shard numbers from 0 to 1"),
        (["producer"], {"CLAIMCHECK_COORDINATOR_SHARDS": "0"}, "invalid configuration CLAIMCHECK_COORDINATOR_SHARDS"),
        (["producer"], {"CLAIMCHECK_POINTER_SIGNING_KEY": "p1:short"},
         "invalid configuration CLAIMCHECK_POINTER_SIGNING_KEY"),
        (["consumer"], {"CLAIMCHECK_ACK_SIGNING_KEY": "k1:short"},
         "invalid configuration CLAIMCHECK_ACK_SIGNING_KEY: Value error, CLAIMCHECK_ACK_SIGNING_KEY: each secret"),
        (["producer"], {"CLAIMCHECK_AMQP_URL": "amqp://u:p@rmq.example:5672/%2F"},
         "CLAIMCHECK_POINTER_SIGNING_KEY is not set, so the built-in local key would be used"),
        (["coordinator"], {"CLAIMCHECK_AMQP_URL": "amqp://u:p@10.1.2.3:5672/%2F"},
         "CLAIMCHECK_ACK_VERIFY_KEYS is not set"),
        (["consumer", "--recipient", "audit"], {"CLAIMCHECK_AMQP_URL": "amqp://u:p@rmq.example/%2F"},
         "CLAIMCHECK_POINTER_VERIFY_KEYS is not set"),
        (["frobnicate"], {}, "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], env: dict[str, str], message: str) -> None:
    result = claimcheck(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("claimcheck: error: "), result.stderr
    assert message in lines[0]


def test_help_still_works() -> None:
    result = claimcheck("producer", "--help")
    assert result.returncode == 0
    assert "--size" in result.stdout and "MSG_SIZE" not in result.stderr
