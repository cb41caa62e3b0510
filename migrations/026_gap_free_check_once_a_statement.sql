-- 001's gap-free check ran once per event: a plpgsql call and a probe of the run's last event for every row,
-- ten of each for a three-step run. It now runs once per statement, over the rows the statement inserted (a
-- transition table): per run, the new events are numbered consecutively, the first follows an event the run
-- already has (or is its first), and no event follows the last. That is what the per-row check asked of an
-- append, made in the order of its seqs, and a concurrent append is still refused as before (the event it
-- would follow is not visible to it), with the same error code, which writers take as "someone appended first".
CREATE OR REPLACE FUNCTION run_events_check_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
  top integer;
BEGIN
  -- a run at a time, each probe on the primary key (a join of the transition table with the log may be planned as
  -- a scan of the whole log)
  FOR r IN SELECT n.run_id, min(n.seq) AS lo, max(n.seq) AS hi, count(*) AS cnt FROM new_events n GROUP BY n.run_id LOOP
    SELECT max(e.seq) INTO top FROM run_events e WHERE e.run_id = r.run_id;
    IF r.cnt <> r.hi - r.lo + 1 OR top <> r.hi
       OR (r.lo > 1 AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = r.run_id AND e.seq = r.lo - 1)) THEN
      RAISE EXCEPTION 'run % cannot take events % to % where they were put: a run''s events are numbered on from its last one, without gaps', r.run_id, r.lo, r.hi
        USING ERRCODE = 'serialization_failure';
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
ALTER FUNCTION run_events_check_seq() SET enable_bitmapscan = off;
DROP TRIGGER run_events_gap_free ON run_events;
CREATE TRIGGER run_events_gap_free AFTER INSERT ON run_events REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION run_events_check_seq();
