"""Progress must not overstate completion: objects the coordinator removed because the run was
cancelled, or swept as orphans, never make ``AllDeleted`` true."""

from claimcheck_operator.conditions.all_deleted import all_deleted
from claimcheck_operator.observe import JobState, Observation, parse_progress


def observation(payload: dict[str, object]) -> Observation:
    idle = JobState(name="j", exists=True)
    return Observation(producer=idle, consumers=(idle,), progress=parse_progress(payload))


def test_cancelled_and_swept_objects_are_not_confirmed_deletions() -> None:
    # What the coordinator answers for a run of 5 where 3 were confirmed, 1 cancelled, 1 swept.
    payload = {"job": "j", "published": 5, "acked": {"billing": 3}, "deleted": 3, "pending": 0,
               "awaiting_pointer": 0, "cancelled": 1, "swept": 1}
    condition = all_deleted(observation(payload), 5, ["billing"], None, "t")
    assert condition["status"] == "False"
    assert "3/5 objects deleted" in condition["message"]
    assert "1 cancelled (not confirmed)" in condition["message"] and "1 swept (not confirmed)" in condition["message"]


def test_every_object_confirmed_and_deleted_is_all_deleted() -> None:
    payload = {"job": "j", "published": 5, "acked": {"billing": 5}, "deleted": 5, "pending": 0, "cancelled": 0, "swept": 0}
    assert all_deleted(observation(payload), 5, ["billing"], None, "t")["status"] == "True"
