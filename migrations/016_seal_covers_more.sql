-- The schema seal covers more (src/integrity/schema-seal.ts): the engine's
-- roles and their memberships, column grants, constraints, rules, event
-- triggers, publications, the database's and roles' settings, every schema,
-- extension and user-defined cast, every function and operator in public and
-- pg_catalog's built-in functions. A seal written before lists none of these,
-- so each would show as added: applying this migration with the chain key
-- seals the schema again (migrate seals after any migration it applies). The
-- schema itself is unchanged; the comment below only says what the table is.
COMMENT ON TABLE schema_seals IS 'signed lists of what the engine''s schema is (src/integrity/schema-seal.ts); verify --all checks the latest';
