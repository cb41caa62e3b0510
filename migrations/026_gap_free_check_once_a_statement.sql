-- 001's gap-free check ran once per event: a plpgsql call and a probe of the run's last event for every row,
-- ten of each for a three-step run. It now runs once per statement, over the rows the statement inserted (a
-- transition table): per run, the new events are numbered consecutively, the first follows an event the run
-- already has (or is its first), and no event follows the last. That is what the per-row check asked of an
-- append, made in the order of its seqs, and a concurrent append is still refused as before (the event it
-- would follow is not visible to it), with the same error code, which writers take as "someone appended first".
CREATE OR REPLACE FUNCTION run_events_check_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad record;
BEGIN
  SELECT n.run_id, n.lo, n.hi INTO bad
  FROM (SELECT run_id, min(seq) AS lo, max(seq) AS hi, count(*) AS cnt FROM new_events GROUP BY run_id) n
  WHERE n.cnt <> n.hi - n.lo + 1
     OR (n.lo > 1 AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = n.run_id AND e.seq = n.lo - 1))
     OR EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = n.run_id AND e.seq > n.hi)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'run % cannot take events % to % where they were put: a run''s events are numbered on from its last one, without gaps', bad.run_id, bad.lo, bad.hi
      USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN NULL;
END $$;
ALTER FUNCTION run_events_check_seq() SET enable_bitmapscan = off;
DROP TRIGGER run_events_gap_free ON run_events;
CREATE TRIGGER run_events_gap_free AFTER INSERT ON run_events REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION run_events_check_seq();
