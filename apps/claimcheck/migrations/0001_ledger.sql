-- The ledger: one row per stored object, one row per (object, recipient) business ACK.
-- States: awaiting_pointer -> pending -> deleting -> deleted (docs/protocol.md).

CREATE TABLE objects (
    object_id        text PRIMARY KEY,
    job              text NOT NULL,
    bucket           text,
    key              text,
    recipients       text[],
    payload_size     bigint,
    payload_sha256   text,
    state            text NOT NULL DEFAULT 'awaiting_pointer'
                     CHECK (state IN ('awaiting_pointer', 'pending', 'deleting', 'deleted')),
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    pointer_created_at timestamptz,
    pointer_seen_at  timestamptz,
    decided_at       timestamptz,
    lease_owner      text,
    lease_until      timestamptz,
    delete_attempts  integer NOT NULL DEFAULT 0,
    last_error       text,
    deleted_at       timestamptz,
    CHECK ((state = 'awaiting_pointer') = (recipients IS NULL))
);
CREATE INDEX objects_by_job ON objects (job);
CREATE INDEX objects_to_delete ON objects (lease_until) WHERE state = 'deleting';

CREATE TABLE acks (
    object_id      text NOT NULL,
    recipient      text NOT NULL,
    payload_sha256 text NOT NULL,
    consumer       text NOT NULL,
    acked_at       timestamptz NOT NULL DEFAULT now(),
    duplicates     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (object_id, recipient)
);

-- Append-only: one row per S3 delete a coordinator performed and recorded.
CREATE TABLE deletions (
    object_id   text NOT NULL,
    coordinator text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deletions_by_object ON deletions (object_id);
