"""One boto3 S3 client per endpoint and credentials in a process (store.client)."""

import threading

from claimcheck import store
from claimcheck.config import Settings


def test_clients_are_shared_per_endpoint_and_credentials_even_when_made_from_many_threads() -> None:
    """Each client costs several MiB: the Producers of a run's upload threads share one."""
    settings = Settings()
    made: list[object] = []
    threads = [threading.Thread(target=lambda: made.append(store.client(settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(made) == 8 and all(client is made[0] for client in made)
    other = settings.model_copy(update={"s3_access_key_id": "someone-else"})
    assert store.client(other) is not made[0]
    assert store.client(other).meta.endpoint_url == made[0].meta.endpoint_url  # type: ignore[attr-defined]
