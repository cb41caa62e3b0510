-- The project named as well as enforced by row-level security.
--
-- Every engine call runs as meshhook_engine for one project, and row-level
-- security keeps it there. Should the policies be weakened (someone with the
-- database altering them), loading and appending a run would follow the run
-- id alone into another project. Both now name the project in their own
-- conditions too: a second wall that holds with the policies gone. (The
-- run's events follow their run by the composite foreign key; naming their
-- project in the join as well made the planner reach for the project's
-- (project_id, recorded_at) index and doubled Postgres's time a workflow.)
CREATE OR REPLACE FUNCTION meshhook_commit_batch(
  p_project uuid, p_run uuid, p_expected_seq integer,
  p_seqs integer[], p_types text[], p_versions smallint[], p_payloads jsonb[], p_recorded_at timestamptz,
  p_prev_hashes text[], p_hashes text[], p_kids text[],
  p_status text, p_current_step text, p_outputs jsonb, p_attempts jsonb, p_result jsonb, p_wake_at timestamptz,
  p_last_seq integer, p_started_at timestamptz, p_finished_at timestamptz, p_head_hash text, p_head_mac text
) RETURNS integer LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp SET enable_bitmapscan = off AS $$
BEGIN
  PERFORM set_config('meshhook.project', p_project::text, true);
  INSERT INTO run_events (project_id, run_id, seq, type, version, payload, recorded_at, prev_hash, hash, kid)
  SELECT p_project, p_run, e.seq, e.type, e.version, e.payload, p_recorded_at, e.prev_hash, e.hash, e.kid
  FROM unnest(p_seqs, p_types, p_versions, p_payloads, p_prev_hashes, p_hashes, p_kids)
    AS e(seq, type, version, payload, prev_hash, hash, kid)
  ORDER BY e.seq;
  UPDATE runs SET status = p_status, current_step = p_current_step, outputs = p_outputs, attempts = p_attempts,
    result = p_result, wake_at = p_wake_at, last_seq = p_last_seq, started_at = p_started_at,
    finished_at = p_finished_at, head_hash = p_head_hash, head_mac = p_head_mac, updated_at = now()
  WHERE id = p_run AND project_id = p_project AND last_seq = p_expected_seq;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'run % is no longer at event %: another writer appended first', p_run, p_expected_seq
      USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN p_last_seq;
END $$;

CREATE OR REPLACE FUNCTION meshhook_load_run(p_project uuid, p_run uuid)
RETURNS TABLE (
  r_project_id uuid, r_workflow_id uuid, r_version integer, r_last_seq integer, r_head_hash text, r_head_mac text,
  project_id uuid, run_id uuid, seq integer, type text, version smallint, payload jsonb, recorded_at timestamptz,
  prev_hash text, hash text, kid text
) LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp SET enable_bitmapscan = off AS $$
BEGIN
  PERFORM set_config('meshhook.project', p_project::text, true);
  RETURN QUERY
    SELECT r.project_id, r.workflow_id, r.version, r.last_seq, r.head_hash, r.head_mac,
           e.project_id, e.run_id, e.seq, e.type, e.version, e.payload, e.recorded_at, e.prev_hash, e.hash, e.kid
    FROM runs r LEFT JOIN run_events e ON e.run_id = r.id
    WHERE r.id = p_run AND r.project_id = p_project
    ORDER BY e.seq;
END $$;
