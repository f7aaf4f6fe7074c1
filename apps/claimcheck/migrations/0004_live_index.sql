-- The coordinator's scrape-time gauges (pending objects, oldest pending) read only live rows.
CREATE INDEX objects_live ON objects (state, pointer_seen_at) WHERE state <> 'deleted';
