-- Tenant isolation. The engine no longer runs as the tables' owner: it runs as
-- meshhook_engine, which holds only the privileges it needs, and row-level
-- security lets it see one project at a time: the project named by
-- `SET LOCAL meshhook.project` in its transaction, or by the `project_id`
-- claim of a JWT (`request.jwt.claims`, how Supabase Realtime checks rows).
-- With neither set, every policy hides every row: isolation fails closed.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'meshhook_engine') THEN
    CREATE ROLE meshhook_engine NOLOGIN;
  END IF;
  -- Supabase's role names, so the official Realtime server applies the same policies
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
END $$;

-- the migrating role may act as the engine (SET ROLE) and check rows as a subscriber would
DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'meshhook_engine', 'MEMBER') THEN
    EXECUTE format('GRANT meshhook_engine TO %I', current_user);
  END IF;
  IF NOT pg_has_role(current_user, 'authenticated', 'MEMBER') THEN
    EXECUTE format('GRANT authenticated TO %I', current_user);
  END IF;
END $$;

CREATE FUNCTION meshhook_current_project() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT CASE
    WHEN coalesce(current_setting('meshhook.project', true), '') <> '' THEN current_setting('meshhook.project', true)::uuid
    ELSE nullif(coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb ->> 'project_id', '')::uuid
  END
$$;

-- Nothing reads the timers table: a waiting run's due time lives in runs.wake_at.
DROP TABLE timers;

-- Every row is tied to its run's project by composite foreign keys, so a row
-- can never point across projects even if written by hand.
ALTER TABLE runs ADD CONSTRAINT runs_project_id_key UNIQUE (project_id, id);
ALTER TABLE workflow_versions ADD CONSTRAINT workflow_versions_project_key UNIQUE (project_id, workflow_id, version);
ALTER TABLE runs DROP CONSTRAINT runs_workflow_id_version_fkey;
ALTER TABLE runs ADD CONSTRAINT runs_version_fkey
  FOREIGN KEY (project_id, workflow_id, version) REFERENCES workflow_versions (project_id, workflow_id, version);
ALTER TABLE run_events DROP CONSTRAINT run_events_run_id_fkey;
ALTER TABLE run_events ADD CONSTRAINT run_events_run_fkey FOREIGN KEY (project_id, run_id) REFERENCES runs (project_id, id);
ALTER TABLE deliveries DROP CONSTRAINT deliveries_run_id_fkey;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_run_fkey FOREIGN KEY (project_id, run_id) REFERENCES runs (project_id, id);
ALTER TABLE deliveries ADD CONSTRAINT deliveries_workflow_fkey FOREIGN KEY (project_id, workflow_id) REFERENCES workflows (project_id, id);

-- Secrets are stored sealed (AES-256-GCM under a key the database never holds; src/security/vault.ts).
ALTER TABLE workflows ADD COLUMN signing_secret_sealed text;
ALTER TABLE workflows ALTER COLUMN signing_secret DROP NOT NULL;
ALTER TABLE workflows ADD CONSTRAINT workflows_secret_present CHECK (signing_secret IS NOT NULL OR signing_secret_sealed IS NOT NULL);

CREATE TABLE project_secrets (
  project_id  uuid NOT NULL REFERENCES projects(id),
  name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  sealed      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, name)
);

-- Outbound calls to private and loopback addresses are refused unless the project allows them.
ALTER TABLE projects ADD COLUMN allow_private_targets boolean NOT NULL DEFAULT false;

-- ───── row-level security, one policy per table

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_secrets ENABLE ROW LEVEL SECURITY;

CREATE POLICY one_project ON projects TO meshhook_engine USING (id = meshhook_current_project());
CREATE POLICY one_project ON workflows TO meshhook_engine
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());
CREATE POLICY one_project ON workflow_versions TO meshhook_engine
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());
CREATE POLICY one_project ON runs TO meshhook_engine, authenticated
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());
CREATE POLICY one_project ON run_events TO meshhook_engine, authenticated
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());
CREATE POLICY one_project ON deliveries TO meshhook_engine
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());
CREATE POLICY one_project ON project_secrets TO meshhook_engine
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());

-- ───── what each role may do at all (RLS then narrows it to one project)

REVOKE ALL ON projects, workflows, workflow_versions, runs, run_events, deliveries, project_secrets, schema_migrations FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO meshhook_engine, authenticated, anon;
GRANT SELECT, UPDATE (allow_private_targets) ON projects TO meshhook_engine;
GRANT SELECT, INSERT, UPDATE (slug, signing_secret, signing_secret_sealed) ON workflows TO meshhook_engine;
GRANT SELECT, INSERT ON workflow_versions TO meshhook_engine;
GRANT SELECT, INSERT, UPDATE ON runs TO meshhook_engine;
-- the log: read and append, nothing else; only the owner could switch its triggers off
GRANT SELECT, INSERT ON run_events TO meshhook_engine;
GRANT SELECT, INSERT ON deliveries TO meshhook_engine;
GRANT SELECT, INSERT, UPDATE, DELETE ON project_secrets TO meshhook_engine;
-- live-log subscribers read runs and their events, of their own project only
GRANT SELECT ON runs, run_events TO authenticated;

-- ───── the few lookups that must cross projects, as narrow definer functions

-- a project's id by slug (or null); how the CLI and the intake find the project to act for
CREATE FUNCTION meshhook_project_id(p_slug text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT id FROM projects WHERE slug = p_slug
$$;

CREATE FUNCTION meshhook_ensure_project(p_slug text, p_name text) RETURNS uuid
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE found uuid;
BEGIN
  INSERT INTO projects (slug, name) VALUES (p_slug, coalesce(p_name, p_slug)) ON CONFLICT (slug) DO NOTHING RETURNING id INTO found;
  IF found IS NULL THEN SELECT id INTO found FROM projects WHERE slug = p_slug; END IF;
  RETURN found;
END $$;

-- every project, for commands that visit them one at a time (verify --all, rebuild)
CREATE FUNCTION meshhook_projects() RETURNS TABLE (id uuid, slug text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT id, slug FROM projects ORDER BY slug
$$;

-- due runs of any project, for workers to claim; each is then handled inside its own project
CREATE FUNCTION meshhook_due_runs(p_now timestamptz, p_limit integer) RETURNS TABLE (id uuid, project_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT id, project_id FROM runs
  WHERE status IN ('running', 'waiting') AND (wake_at IS NULL OR wake_at <= p_now)
  ORDER BY wake_at NULLS FIRST, created_at LIMIT p_limit
$$;

REVOKE ALL ON FUNCTION meshhook_project_id(text), meshhook_ensure_project(text, text), meshhook_projects(),
  meshhook_due_runs(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_project_id(text), meshhook_ensure_project(text, text), meshhook_projects(),
  meshhook_due_runs(timestamptz, integer) TO meshhook_engine;

-- ───── live logs: committed run events are published for logical replication (Supabase Realtime's publication name)
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END $$;
ALTER PUBLICATION supabase_realtime ADD TABLE run_events;
