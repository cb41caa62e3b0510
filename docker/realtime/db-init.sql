-- Realtime keeps its control-plane tables (tenants, extensions) in schema _realtime of the
-- database it connects to (DB_AFTER_CONNECT_QUERY sets the search_path to it).
CREATE SCHEMA IF NOT EXISTS _realtime;
ALTER SCHEMA _realtime OWNER TO supabase_admin;
