-- A run's start wrote the run twice in its transaction: inserted empty, then updated by meshhook_commit_batch
-- with the view of its first events (and an update of a row inserted in the same transaction checks the row's
-- foreign keys again). It is now inserted once, as its first batch leaves it, and its first events appended
-- straight after it. What the start answers, and when, is unchanged.
CREATE OR REPLACE FUNCTION meshhook_start_run(
  p_project uuid, p_workflow uuid, p_version integer, p_delivery_id text, p_body_sha text, p_received_at timestamptz,
  p_run uuid,
  p_seqs integer[], p_types text[], p_versions smallint[], p_payloads jsonb[], p_recorded_at timestamptz,
  p_prev_hashes text[], p_hashes text[], p_kids text[],
  p_status text, p_current_step text, p_outputs jsonb, p_attempts jsonb, p_result jsonb, p_wake_at timestamptz,
  p_last_seq integer, p_started_at timestamptz, p_finished_at timestamptz, p_head_hash text, p_head_mac text
) RETURNS TABLE (run_id uuid, body_sha256 text, duplicate boolean)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
  seen record;
BEGIN
  PERFORM set_config('meshhook.project', p_project::text, true);
  SELECT d.run_id, d.body_sha256 INTO seen FROM deliveries d
  WHERE d.project_id = p_project AND d.workflow_id = p_workflow AND d.delivery_id = p_delivery_id;
  IF FOUND THEN
    RETURN QUERY SELECT seen.run_id, seen.body_sha256, true;
    RETURN;
  END IF;
  -- no record: the run it started may still name it in its signed first event (the record deleted behind the
  -- engine's back); that run's answer, with the body hash the event signs, not a second run
  SELECT f.run_id, f.body_sha256 INTO seen FROM meshhook_run_of_delivery(p_workflow, p_delivery_id) f;
  IF FOUND THEN
    RETURN QUERY SELECT seen.run_id, seen.body_sha256, true;
    RETURN;
  END IF;
  -- the run is written as its first batch leaves it, once: not inserted empty and then updated by commit_batch
  -- (an update of a row inserted in the same transaction checks its foreign keys again), and with no advisory
  -- lock, as nothing can append to a run before it exists
  INSERT INTO runs (id, project_id, workflow_id, version, status, current_step, outputs, attempts, result, wake_at,
    last_seq, started_at, finished_at, head_hash, head_mac)
  VALUES (p_run, p_project, p_workflow, p_version, p_status, p_current_step, p_outputs, p_attempts, p_result, p_wake_at,
    p_last_seq, p_started_at, p_finished_at, p_head_hash, p_head_mac);
  INSERT INTO deliveries (project_id, workflow_id, delivery_id, run_id, body_sha256, received_at)
  VALUES (p_project, p_workflow, p_delivery_id, p_run, p_body_sha, p_received_at)
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'delivery % was recorded by a concurrent request', p_delivery_id USING ERRCODE = 'serialization_failure';
  END IF;
  INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid)
  SELECT p_project, p_run, e.seq, e.type, e.version, e.payload, p_recorded_at, e.prev_hash, e.hash, e.kid
  FROM unnest(p_seqs, p_types, p_versions, p_payloads, p_prev_hashes, p_hashes, p_kids)
    AS e(seq, type, version, payload, prev_hash, hash, kid)
  ORDER BY e.seq;
  RETURN QUERY SELECT p_run, p_body_sha, false;
END $$;
-- CREATE OR REPLACE resets the function's settings to those it names: keep 008's plan setting
ALTER FUNCTION meshhook_start_run SET enable_bitmapscan = off;
