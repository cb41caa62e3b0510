-- The schema seal covers the built-in rows of pg_operator, pg_type and the operator classes (pg_opclass,
-- pg_opfamily, pg_amop, pg_amproc), each catalog hashed as one, beside pg_catalog's built-in functions: a
-- superuser can edit such a row in place (the uuid `=` made to call `<=`) without any DDL
-- (src/integrity/schema-seal.ts). Applying this migration with the chain key seals the schema again; nothing
-- else changes.
COMMENT ON TABLE schema_seals IS 'the engine''s schema as it sealed it, signed; verify --all compares the schema with the latest (src/integrity/schema-seal.ts)';
