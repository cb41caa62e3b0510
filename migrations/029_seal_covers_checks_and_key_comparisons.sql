-- The schema seal also covers whether Postgres checks the engine tables' CHECK constraints at all
-- (pg_class.relchecks), the operators each of their foreign keys compares with (pg_constraint.conpfeqop, conppeqop,
-- conffeqop), and pg_catalog's built-in functions row by row, every column. A superuser's plain UPDATE of pg_class
-- (relchecks = 0) stopped every CHECK of a table (a project's slug, a secret's name) while pg_constraint still
-- listed them; one of pg_constraint (conpfeqop: `<>` on the run id) made the foreign key tying an event to its run
-- take an event of a run that does not exist; one of pg_proc (proargdefaults, prosqlbody) changed a built-in
-- function's default argument or SQL body: none changed anything the seal printed (src/integrity/schema-seal.ts).
-- Applying this migration with the chain key seals the schema again; nothing else changes.
COMMENT ON TABLE run_events IS 'the run log: append-only, gap-free, hash-chained and signed (src/domain/hash-chain.ts)';
