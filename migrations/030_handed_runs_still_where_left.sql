-- Runs the intake of a process hands to that process's workers (src/worker/handover.ts) wait there until a worker
-- has a free slot. Meanwhile another process's worker may have claimed one, moved it on and let it go: locking it
-- then succeeds, and the worker would decide from the state the intake left, only to lose at its first append
-- (correct, but work thrown away; the chaos probe's mixed topology showed many). The claim asks this function which
-- handed runs are still where the intake left them, in the same statement as it locks them.
CREATE FUNCTION meshhook_runs_still_at(p_ids uuid[], p_seqs integer[]) RETURNS TABLE (id uuid, project_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT r.id, r.project_id
  FROM unnest(p_ids, p_seqs) WITH ORDINALITY AS h(id, seq, n)
  JOIN runs r ON r.id = h.id AND r.last_seq = h.seq
  WHERE r.status IN ('running', 'waiting')
  ORDER BY h.n
$$;

REVOKE ALL ON FUNCTION meshhook_runs_still_at(uuid[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_runs_still_at(uuid[], integer[]) TO meshhook_engine;
