-- verify --all checks every index of the engine's tables against its table (amcheck's bt_index_check, with
-- heapallindexed): an index made to lie without touching a sealed object (its file swapped for another table's,
-- entries left out while indisready was off, the database's collation changed under it) let a re-delivery's
-- lookups miss its run, or the intake read an older version as the latest. Where the server has no amcheck (a
-- Postgres without its contrib modules) verify says that it could not check the indexes.
DO $$
DECLARE
  f regprocedure;
BEGIN
  CREATE EXTENSION IF NOT EXISTS amcheck;
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_extension e ON e.extname = 'amcheck'
           JOIN pg_depend d ON d.objid = p.oid AND d.refobjid = e.oid AND d.deptype = 'e' WHERE p.proname = 'bt_index_check' LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO meshhook_engine', f);
  END LOOP;
EXCEPTION WHEN undefined_file OR feature_not_supported OR insufficient_privilege OR undefined_object THEN
  RAISE NOTICE 'amcheck is not available here: verify --all cannot check indexes against their tables (%)', SQLERRM;
END $$;
