"""``SpecApplied``: the running Jobs were built from the current spec.

The CRD rejects spec changes (CEL ``self == oldSelf``); this condition reports a change that
got through anyway (a cluster without CEL validation) instead of silently ignoring it.
"""

from __future__ import annotations

from claimcheck_operator.conditions.base import Condition, make

TYPE = "SpecApplied"
SPEC_UNCHANGED = "SpecUnchanged"
SPEC_CHANGED_AFTER_START = "SpecChangedAfterStart"


def spec_applied(applied_hash: str, current_hash: str, previous: Condition | None, now: str) -> Condition:
    if applied_hash == current_hash:
        return make(TYPE, "True", SPEC_UNCHANGED, "the Jobs run the current spec", previous, now)
    return make(
        TYPE, "False", SPEC_CHANGED_AFTER_START,
        "spec changed after the Jobs were created and the change is ignored; "
        "delete and recreate the ClaimCheckJob to run with the new spec",
        previous, now,
    )
