-- A vault secret's removal is signed with the engine's key.
--
-- A secret deleted from project_secrets by someone with the database (who has
-- no key) makes every call that needs it fail closed (SECRET_MISSING), and
-- nothing named why: the owner's `meshhook secrets rm` left the same trace, none.
-- The engine now records each removal it makes here, signed with its chain key
-- over the project, the secret's name and the time (`removed:<kid>:<at>:<mac>`),
-- which the database never holds. `verify --all --checkpoints` names a secret a
-- checkpoint saw that is gone now without a genuine removal of it made after
-- that checkpoint. Setting the secret again deletes its removal record. Workers
-- never read this table: a removed secret is missing, and nothing is sent.
CREATE TABLE project_secret_removals (
  project_id  uuid NOT NULL REFERENCES projects(id),
  name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  -- removed:<kid>:<removed at>:<hex HMAC> over the project, the name and the time
  removal     text NOT NULL,
  PRIMARY KEY (project_id, name)
);

ALTER TABLE project_secret_removals ENABLE ROW LEVEL SECURITY;
CREATE POLICY one_project ON project_secret_removals TO meshhook_engine
  USING (project_id = meshhook_current_project()) WITH CHECK (project_id = meshhook_current_project());

REVOKE ALL ON project_secret_removals FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON project_secret_removals TO meshhook_engine;
