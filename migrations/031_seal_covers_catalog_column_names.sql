-- The schema seal also covers the names of the columns of each catalog (and system view) it reads (pg_attribute:
-- position, name, type). Postgres reads its own catalogs by position, the seal by name: a superuser's plain UPDATE
-- of pg_attribute swapping two columns' names in pg_constraint (conpfeqop, sealed since 029, and conexclop, which a
-- foreign key never reads, given the genuine operators) let a foreign key compare with <> and take an event of a
-- run that does not exist, while the seal, asking for "conpfeqop", was answered the genuine operators
-- (src/integrity/schema-seal.ts). Applying this migration with the chain key seals the schema again; nothing else
-- changes.
COMMENT ON TABLE run_events IS 'the run log: append-only, gap-free, hash-chained and signed (src/domain/hash-chain.ts)';
