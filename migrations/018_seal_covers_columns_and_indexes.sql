-- The schema seal covers a few server-wide settings that switch the engine's defences off in every session
-- (session_replication_role, row_security, local_preload_libraries, read-only transactions), and the engine tables' columns (type, NOT NULL, default, generated, collation), their
-- indexes as pg_index has them (unique, ready, valid: a primary key's index switched off there leaves its
-- constraint as it was in pg_constraint, and duplicates through), and tables inheriting from them
-- (src/integrity/schema-seal.ts). Applying this migration with the chain key seals the schema again; nothing
-- else changes.
COMMENT ON TABLE schema_migrations IS 'the migrations applied, in order; a row missing before a later one is refused (src/db/migrate.ts)';
-- verify --all (as the engine's role) holds the migrations recorded against the migration the schema was last
-- sealed after: a row written there ahead of an upgrade keeps that migration from ever running
GRANT SELECT ON schema_migrations TO meshhook_engine;
