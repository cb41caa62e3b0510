-- The engine's schema, sealed (src/integrity/schema-seal.ts). Row-level
-- security, the policies, the grants, the log's triggers and the engine's SQL
-- functions can be switched off or replaced by someone with the database
-- without touching a row the chain covers. When the engine applies its
-- migrations it writes down what each of them is and signs that list with the
-- chain key, which the database never holds; `verify --all` names every one
-- that is not as sealed. Only the latest seal counts; older ones stay as a
-- record of when the schema changed.
CREATE TABLE schema_seals (
  id         bigserial PRIMARY KEY,
  sealed_at  timestamptz NOT NULL DEFAULT now(),
  -- the last migration applied when it was sealed
  migration  text NOT NULL,
  objects    jsonb NOT NULL,
  -- <kid>:<hex HMAC> over the migration and the objects' canonical JSON
  mac        text NOT NULL
);
REVOKE ALL ON schema_seals FROM PUBLIC;
REVOKE ALL ON SEQUENCE schema_seals_id_seq FROM PUBLIC;
GRANT SELECT ON schema_seals TO meshhook_engine;
