-- Group commit: the batches of many runs in one call and one transaction, so
-- a worker pays one round trip and one commit for everything its runs decided
-- meanwhile. Each batch is exactly a meshhook_commit_batch call inside its own
-- subtransaction: a batch whose run another writer moved on (40001, 23505)
-- keeps nothing and is reported false; the others are kept. Any other error
-- fails the whole call and the caller tries the batches one by one.
-- The argument is a JSON array of batches whose arrays are texts in order.
CREATE FUNCTION meshhook_texts(j jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT coalesce(array_agg(x ORDER BY i), '{}') FROM jsonb_array_elements_text(j) WITH ORDINALITY AS t(x, i)
$$;

CREATE FUNCTION meshhook_commit_batches(p_batches jsonb) RETURNS SETOF boolean
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
  b jsonb;
  ok boolean;
BEGIN
  FOR b IN SELECT x FROM jsonb_array_elements(p_batches) WITH ORDINALITY AS t(x, i) ORDER BY i LOOP
    BEGIN
      PERFORM meshhook_commit_batch(
        (b->>'project')::uuid, (b->>'run')::uuid, (b->>'expectedSeq')::integer,
        meshhook_texts(b->'seqs')::integer[], meshhook_texts(b->'types'), meshhook_texts(b->'versions')::smallint[],
        meshhook_texts(b->'payloads')::jsonb[], (b->>'recordedAt')::timestamptz,
        meshhook_texts(b->'prevHashes'), meshhook_texts(b->'hashes'), meshhook_texts(b->'kids'),
        b->>'status', b->>'currentStep', (b->>'outputs')::jsonb, (b->>'attempts')::jsonb, (b->>'result')::jsonb,
        (b->>'wakeAt')::timestamptz, (b->>'lastSeq')::integer, (b->>'startedAt')::timestamptz,
        (b->>'finishedAt')::timestamptz, b->>'headHash', b->>'headMac');
      ok := true;
    EXCEPTION WHEN serialization_failure OR unique_violation THEN
      ok := false;
    END;
    RETURN NEXT ok;
  END LOOP;
END $$;
REVOKE ALL ON FUNCTION meshhook_commit_batches(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_commit_batches(jsonb) TO meshhook_engine;
