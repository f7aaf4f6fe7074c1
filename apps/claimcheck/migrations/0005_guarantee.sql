-- The deletion guarantee against every input and race (docs/failure-model.md).

-- An ACK counts for the sha256 it confirms: an early ACK naming a wrong checksum occupies its
-- own row and never the slot of the correct one that follows.
ALTER TABLE acks DROP CONSTRAINT acks_pkey;
ALTER TABLE acks ADD PRIMARY KEY (object_id, recipient, payload_sha256);

-- A cancelled run stays cancelled: pointers of it that arrive later are settled as cancelled.
CREATE TABLE cancelled_jobs (
    job          text PRIMARY KEY,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO cancelled_jobs (job, cancelled_at)
     SELECT job, min(cancelled_at) FROM objects WHERE cancelled_at IS NOT NULL GROUP BY job;

-- When the producer's intent to upload this object was applied (the sweeper's clock for it).
ALTER TABLE objects ADD COLUMN intent_seen_at timestamptz;

-- Barriers the sweeper sent through the coordinator's pointer queue, once applied.
CREATE TABLE sweep_barriers (
    nonce      text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One object per stored key.
CREATE UNIQUE INDEX objects_bucket_key ON objects (bucket, key) WHERE key IS NOT NULL;

-- Each object is recorded as deleted at most once.
DELETE FROM deletions d USING deletions e WHERE d.object_id = e.object_id AND d.ctid > e.ctid;
DROP INDEX deletions_by_object;
CREATE UNIQUE INDEX deletions_once ON deletions (object_id);
