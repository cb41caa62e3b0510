-- Plans that stay small as a project grows. Row-level security adds
-- `project_id = meshhook_current_project()` to every query on the log. The
-- planner cannot know that value; without statistics (a new table, a burst of
-- writes before autovacuum's next ANALYZE) it guesses a handful of rows, and
-- combines the run's primary key with the (project_id, recorded_at) index in
-- a bitmap: a scan of every event of the project to find one run's. Each load
-- and each appended event then costs time in proportion to the project's
-- whole log (a run's load took 0.25 ms at 3,000 events of its project against
-- 0.14 ms without the bitmap, and grows from there).
--
-- The engine's own calls read and write one run by its key, and the
-- gap-free check reads one run's last event: none of them needs a bitmap.
ALTER FUNCTION run_events_check_seq() SET enable_bitmapscan = off;
ALTER FUNCTION meshhook_load_run(uuid, uuid) SET enable_bitmapscan = off;
ALTER FUNCTION meshhook_commit_batch SET enable_bitmapscan = off;
ALTER FUNCTION meshhook_commit_batches(jsonb) SET enable_bitmapscan = off;
ALTER FUNCTION meshhook_start_run SET enable_bitmapscan = off;
