"""Each metric moves as it should after one run of N objects for two recipient groups
(read from the components' /metrics directly), and one payload can be followed in the logs."""

import json

from tests.observability.observability_support import ObservedRun, scrape, value


def test_producer_counts_what_it_published(observed_run: ObservedRun) -> None:
    after, before = scrape(observed_run.producer_port), observed_run.producer_before
    n = observed_run.count

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    assert delta("claimcheck_producer_objects_published_total") == n
    assert delta("claimcheck_producer_payload_bytes_total") == n * 64 * 1024
    assert 0 < delta("claimcheck_producer_stored_bytes_total") < n * 64 * 1024  # gzip shrinks the JSON
    assert delta("claimcheck_producer_upload_seconds_count") == n
    assert delta("claimcheck_producer_publish_seconds_count") == n


def test_consumers_count_received_verified_and_dead_letters(observed_run: ObservedRun) -> None:
    n = observed_run.count
    for recipient, port in observed_run.consumer_ports.items():
        samples = scrape(port)
        garbage = 1 if recipient == "billing" else 0
        assert value(samples, "claimcheck_consumer_pointers_received_total", recipient=recipient) == n + garbage
        assert value(samples, "claimcheck_consumer_payloads_verified_total", recipient=recipient) == n
        assert value(samples, "claimcheck_consumer_checksum_failures_total", recipient=recipient) == 0
        assert value(samples, "claimcheck_consumer_messages_total", recipient=recipient, result="acked") == n
        assert value(samples, "claimcheck_consumer_download_seconds_count", recipient=recipient) == n
        assert value(samples, "claimcheck_consumer_processing_seconds_count", recipient=recipient) == n
        assert value(samples, "claimcheck_dead_letters_total", component="consumer") == garbage
        # every dead-letter reason exists from the start, at zero
        assert value(samples, "claimcheck_dead_letters_total", component="consumer", reason="integrity") == 0


def test_coordinator_counts_acks_deletes_and_nothing_pending(observed_run: ObservedRun) -> None:
    n, samples = observed_run.count, scrape(observed_run.coordinator_port)
    assert value(samples, "claimcheck_coordinator_messages_total", kind="pointer", outcome="recorded") == n
    assert value(samples, "claimcheck_coordinator_acks_total", outcome="recorded") == 2 * n
    for recipient in observed_run.recipients:
        assert value(samples, "claimcheck_coordinator_acks_total", recipient=recipient, outcome="recorded") == n
        assert value(samples, "claimcheck_coordinator_objects_awaiting_recipient", recipient=recipient) == 0
    assert value(samples, "claimcheck_coordinator_acks_total", outcome="duplicate") == 0
    assert value(samples, "claimcheck_coordinator_deletes_total") == n
    assert value(samples, "claimcheck_coordinator_delete_failures_total") == 0
    assert value(samples, "claimcheck_coordinator_publish_to_delete_seconds_count") == n
    assert value(samples, "claimcheck_coordinator_ledger_up") == 1
    assert value(samples, "claimcheck_coordinator_objects", state="pending") == 0
    assert value(samples, "claimcheck_coordinator_objects", state="deleting") == 0
    assert value(samples, "claimcheck_coordinator_oldest_object_age_seconds", state="pending") == 0
    assert value(samples, "claimcheck_dead_letters_total", component="coordinator") == 0


def test_connection_recoveries_start_at_zero(observed_run: ObservedRun) -> None:
    for port in [observed_run.coordinator_port, *observed_run.consumer_ports.values()]:
        samples = scrape(port)
        assert ("claimcheck_connection_recoveries_total", (("cause", "broker"), ("role", "consume"))) in samples


def test_one_payload_can_be_followed_across_components(observed_run: ObservedRun) -> None:
    object_id = observed_run.object_ids[0]
    seen = {}
    for name, path in observed_run.logs.items():
        records = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
        seen[name] = [r["message"] for r in records if r.get("object_id") == object_id]
        assert all(r.get("component") for r in records)
    assert seen["coordinator"] and seen["consumer-audit"] and seen["consumer-billing"], seen
    consumer = [json.loads(line) for line in observed_run.logs["consumer-audit"].read_text().splitlines()
                if line.startswith("{") and object_id in line]
    assert consumer[0]["job"] == observed_run.job and consumer[0]["recipient"] == "audit"
