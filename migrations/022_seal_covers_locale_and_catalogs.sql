-- The schema seal also covers the database's locale (the order its text indexes were built in: changed under them,
-- a delivery's lookups miss rows that are there), the built-in rows of pg_collation, pg_cast and pg_rewrite (the
-- system views the seal reads, redefined in place, keep their oids), and that every catalog, function and type the
-- seal's own read names is still the one initdb made (a catalog renamed and a lying view put under its name)
-- (src/integrity/schema-seal.ts). Applying this migration with the chain key seals the schema again; nothing else
-- changes.
COMMENT ON TABLE schema_seals IS 'the engine''s schema as it sealed it, signed; verify --all compares the schema with the latest (src/integrity/schema-seal.ts)';
