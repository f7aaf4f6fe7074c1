"""The console script refuses a bad setting with a one-line error instead of starting."""

from __future__ import annotations

import subprocess
import sys


def test_bad_setting_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys, claimcheck_operator.main as m; sys.exit(m.main())"],
        env={"CLAIMCHECK_STUCK_AFTER_SECONDS": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "claimcheck-operator: CLAIMCHECK_STUCK_AFTER_SECONDS='soon' is not a number of seconds"]
