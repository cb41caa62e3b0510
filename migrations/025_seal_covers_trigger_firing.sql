-- The schema seal also covers whether Postgres fires the engine tables' triggers at all and keeps their indexes
-- (pg_class.relhastriggers, relhasindex, relpersistence), the internal triggers that enforce their foreign keys
-- (pg_trigger: function, events), and the built-in rows of pg_aggregate, pg_language and pg_am. A superuser's plain
-- UPDATE of pg_class (relhastriggers = false) switched off the append-only and gap-free triggers and every foreign
-- key of a table while pg_trigger still listed them enabled; one of pg_trigger's tgtype stopped a foreign key from
-- checking inserts; one of pg_aggregate made max(integer) answer the least value: none changed anything the seal
-- printed (src/integrity/schema-seal.ts). Applying this migration with the chain key seals the schema again;
-- nothing else changes.
COMMENT ON TABLE run_events IS 'the run log: append-only, gap-free, hash-chained and signed (src/domain/hash-chain.ts)';
