-- Appends to one run take turns. A worker's batch and an operator's action
-- both append at the event number they expect, and the loser decides again on
-- what the winner wrote. That alone let a worker racing through quick steps
-- win every round against an operator (who reads the run, checks it and
-- decides, more slowly): a cancel sent while the worker was mid-transaction
-- was refused at the end as "already succeeded". Now every append to a run
-- first takes a transaction lock on that run (class 0x4d41, "MA"; the
-- workers' ownership locks are class 0x4d48): an operator's action waits for
-- the batch in flight, then lands before the worker's next one, which finds
-- the run moved on and decides again on the action. Taken first, before any
-- event is written, so two appenders never wait on each other in turn.
CREATE OR REPLACE FUNCTION meshhook_commit_batch(
  p_project uuid, p_run uuid, p_expected_seq integer,
  p_seqs integer[], p_types text[], p_versions smallint[], p_payloads jsonb[], p_recorded_at timestamptz,
  p_prev_hashes text[], p_hashes text[], p_kids text[],
  p_status text, p_current_step text, p_outputs jsonb, p_attempts jsonb, p_result jsonb, p_wake_at timestamptz,
  p_last_seq integer, p_started_at timestamptz, p_finished_at timestamptz, p_head_hash text, p_head_mac text
) RETURNS integer LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp SET enable_bitmapscan = off AS $$
BEGIN
  PERFORM set_config('meshhook.project', p_project::text, true);
  PERFORM pg_catalog.pg_advisory_xact_lock(19777, pg_catalog.hashtext(p_run::text));
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
