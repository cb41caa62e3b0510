-- The schema seal also covers the libraries Postgres loads into sessions (shared_preload_libraries,
-- session_preload_libraries, jit_provider) and where it looks for a library named without a directory
-- (dynamic_library_path). Only a superuser, or a member of pg_read_all_settings, can read them, and the engine reads
-- the schema as meshhook_engine: `ALTER SYSTEM SET session_preload_libraries = ...` and a reload ran a library of the
-- superuser's choosing in every engine session while verify --all said ok (src/integrity/schema-seal.ts). The
-- engine's role is made a member of pg_read_all_settings, which lets it read settings and nothing else; where whoever
-- migrates may not grant it, the seal records that the engine's role cannot read them.
DO $$
BEGIN
  GRANT pg_read_all_settings TO meshhook_engine;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'meshhook_engine was not made a member of pg_read_all_settings (%): the libraries preloaded into sessions are not sealed', SQLERRM;
END $$;
