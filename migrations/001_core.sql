-- MeshHook Replay core schema. Every row carries its project: tenant isolation
-- (row-level security by project) is added on top of this without a rewrite.

CREATE TABLE projects (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{0,62}$'),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workflows (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  project_id     uuid NOT NULL REFERENCES projects(id),
  slug           text NOT NULL CHECK (slug ~ '^[a-z][a-z0-9-]{0,62}$'),
  -- HMAC key for webhook signatures; never copied into events or logs
  signing_secret text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, slug),
  UNIQUE (project_id, id)
);

CREATE TABLE workflow_versions (
  project_id      uuid NOT NULL,
  workflow_id     uuid NOT NULL,
  version         integer NOT NULL CHECK (version > 0),
  definition      jsonb NOT NULL,
  definition_hash text NOT NULL,
  published_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workflow_id, version),
  FOREIGN KEY (project_id, workflow_id) REFERENCES workflows(project_id, id)
);

CREATE TABLE runs (
  id            uuid PRIMARY KEY,
  project_id    uuid NOT NULL REFERENCES projects(id),
  workflow_id   uuid NOT NULL,
  version       integer NOT NULL,
  status        text NOT NULL CHECK (status IN ('running', 'waiting', 'succeeded', 'failed', 'canceled')),
  current_step  text,
  outputs       jsonb NOT NULL DEFAULT '{}',
  attempts      jsonb NOT NULL DEFAULT '{}',
  result        jsonb,
  -- when a waiting run is next due (durable timer); null = runnable now or finished
  wake_at       timestamptz,
  last_seq      integer NOT NULL DEFAULT 0,
  started_at    timestamptz,
  finished_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions(workflow_id, version)
);
-- the workers' claim query: unfinished runs by due time
CREATE INDEX runs_claimable ON runs (wake_at NULLS FIRST, created_at) WHERE status IN ('running', 'waiting');
CREATE INDEX runs_by_project ON runs (project_id, created_at DESC);

CREATE TABLE run_events (
  project_id   uuid NOT NULL,
  run_id       uuid NOT NULL REFERENCES runs(id),
  seq          integer NOT NULL CHECK (seq > 0),
  type         text NOT NULL,
  version      smallint NOT NULL,
  payload      jsonb NOT NULL,
  recorded_at  timestamptz NOT NULL,
  prev_hash    text NOT NULL,
  hash         text NOT NULL,
  PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_events_by_project ON run_events (project_id, recorded_at);

-- The log is append-only: the database itself refuses edits.
CREATE FUNCTION run_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'run_events is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER run_events_no_update_delete BEFORE UPDATE OR DELETE ON run_events
  FOR EACH ROW EXECUTE FUNCTION run_events_refuse_change();
CREATE TRIGGER run_events_no_truncate BEFORE TRUNCATE ON run_events
  FOR EACH STATEMENT EXECUTE FUNCTION run_events_refuse_change();

-- Gap-free numbering: an event must follow the run's last one exactly.
CREATE FUNCTION run_events_check_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last integer;
BEGIN
  SELECT coalesce(max(seq), 0) INTO last FROM run_events WHERE run_id = NEW.run_id;
  IF NEW.seq <> last + 1 THEN
    RAISE EXCEPTION 'run % expects event % next, not %', NEW.run_id, last + 1, NEW.seq
      USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER run_events_gap_free BEFORE INSERT ON run_events
  FOR EACH ROW EXECUTE FUNCTION run_events_check_seq();

-- Published versions are immutable.
CREATE FUNCTION workflow_versions_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'published workflow versions are immutable: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER workflow_versions_immutable BEFORE UPDATE OR DELETE ON workflow_versions
  FOR EACH ROW EXECUTE FUNCTION workflow_versions_refuse_change();

CREATE TABLE deliveries (
  project_id   uuid NOT NULL,
  workflow_id  uuid NOT NULL,
  delivery_id  text NOT NULL,
  run_id       uuid NOT NULL REFERENCES runs(id),
  body_sha256  text NOT NULL,
  received_at  timestamptz NOT NULL,
  PRIMARY KEY (project_id, workflow_id, delivery_id)
);

CREATE TABLE timers (
  project_id  uuid NOT NULL,
  run_id      uuid NOT NULL REFERENCES runs(id),
  timer_id    text NOT NULL,
  step        text NOT NULL,
  purpose     text NOT NULL CHECK (purpose IN ('delay', 'retry')),
  due_at      timestamptz NOT NULL,
  fired_at    timestamptz,
  PRIMARY KEY (run_id, timer_id)
);
CREATE INDEX timers_pending ON timers (due_at) WHERE fired_at IS NULL;
