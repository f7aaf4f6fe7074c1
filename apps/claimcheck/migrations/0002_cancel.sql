-- A run cancelled through DELETE /jobs/<job>: its pending objects are deleted without waiting
-- for the remaining recipients; cancelled_at says which deletions were not earned by ACKs.
ALTER TABLE objects ADD COLUMN cancelled_at timestamptz;
