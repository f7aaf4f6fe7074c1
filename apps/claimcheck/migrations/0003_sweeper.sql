-- Objects the orphan sweeper removed: uploaded, but no live pointer referenced them.
ALTER TABLE objects ADD COLUMN swept_at timestamptz;
