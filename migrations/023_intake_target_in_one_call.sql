-- What the intake needs of a webhook's target before it checks the signature, in one call instead of four
-- transactions (eight round trips): the project by its name (with its name's signature), the workflow of it with
-- its sealed signing secret, and the latest published version with its hash and signature. It runs as the engine
-- (row-level security applies): the project is found by the definer lookup of 014 and then chosen for the
-- statement's transaction, as meshhook_start_run does. No row: no such project. Every check stays in Node
-- (src/store/registry.ts findIntakeTarget): the name's signature, the secret's seal, the version's hash and signature.
CREATE FUNCTION meshhook_intake_target(p_project text, p_workflow text)
  RETURNS TABLE (project_id uuid, slug_mac text, workflow_id uuid, signing_secret_sealed text, version integer,
                 definition text, definition_hash text, definition_mac text)
  LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
  p record;
BEGIN
  SELECT n.id, n.slug_mac INTO p FROM meshhook_project_named(p_project) n;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM set_config('meshhook.project', p.id::text, true);
  RETURN QUERY
    SELECT p.id, p.slug_mac, w.id, w.signing_secret_sealed, v.version, v.definition::text, v.definition_hash, v.definition_mac
    FROM (SELECT 1) AS one
    LEFT JOIN workflows w ON w.project_id = p.id AND w.slug = p_workflow
    LEFT JOIN LATERAL (
      SELECT x.version, x.definition, x.definition_hash, x.definition_mac FROM workflow_versions x
      WHERE x.workflow_id = w.id ORDER BY x.version DESC LIMIT 1
    ) v ON true;
END $$;
REVOKE ALL ON FUNCTION meshhook_intake_target(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_intake_target(text, text) TO meshhook_engine;
