-- 020's lookup of a delivery among first events ran as the engine, under row-level security: its
-- `payload->>'deliveryId' = …` is not leakproof, so Postgres may not use it as an index condition before the
-- policy's own, and every delivery with no record (every new one) read all of its project's events (a seq scan of
-- run_events). The lookup is a narrow definer function instead (as 002's cross-project lookups are): the owner reads
-- through the partial index, and the function shows only the project the transaction names, as the policy does.
CREATE FUNCTION meshhook_run_of_delivery(p_workflow uuid, p_delivery_id text) RETURNS TABLE (run_id uuid, body_sha256 text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp SET enable_bitmapscan = off AS $$
  SELECT e.run_id, e.payload->>'bodySha256' FROM run_events e JOIN runs r ON r.id = e.run_id
  WHERE e.project_id = meshhook_current_project() AND e.seq = 1 AND e.payload->>'deliveryId' = p_delivery_id
    AND r.project_id = e.project_id AND r.workflow_id = p_workflow
  LIMIT 1
$$;
REVOKE ALL ON FUNCTION meshhook_run_of_delivery(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_run_of_delivery(uuid, text) TO meshhook_engine;

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
  INSERT INTO runs (id, project_id, workflow_id, version, status, last_seq) VALUES (p_run, p_project, p_workflow, p_version, 'running', 0);
  INSERT INTO deliveries (project_id, workflow_id, delivery_id, run_id, body_sha256, received_at)
  VALUES (p_project, p_workflow, p_delivery_id, p_run, p_body_sha, p_received_at)
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'delivery % was recorded by a concurrent request', p_delivery_id USING ERRCODE = 'serialization_failure';
  END IF;
  -- the first batch is appended like every other one
  PERFORM meshhook_commit_batch(p_project, p_run, 0, p_seqs, p_types, p_versions, p_payloads, p_recorded_at,
    p_prev_hashes, p_hashes, p_kids, p_status, p_current_step, p_outputs, p_attempts, p_result, p_wake_at,
    p_last_seq, p_started_at, p_finished_at, p_head_hash, p_head_mac);
  RETURN QUERY SELECT p_run, p_body_sha, false;
END $$;
-- CREATE OR REPLACE resets the function's settings to those it names: keep 008's plan setting
ALTER FUNCTION meshhook_start_run SET enable_bitmapscan = off;
