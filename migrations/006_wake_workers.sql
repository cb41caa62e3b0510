-- Workers are woken by a new run instead of finding it at their next poll:
-- a run row inserted (by the intake's meshhook_start_run) notifies
-- 'meshhook_due' when its transaction commits, and every worker LISTENs on its
-- lock session. Polling stays as the fallback (a notification is lost while a
-- worker's session is down, and timers come due without any insert).
-- FOR EACH STATEMENT: one notification per start, never one per row; Postgres
-- folds identical notifications within a transaction anyway.
CREATE FUNCTION meshhook_notify_due() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
BEGIN
  PERFORM pg_notify('meshhook_due', '');
  RETURN NULL;
END $$;

CREATE TRIGGER runs_wake_workers AFTER INSERT ON runs
  FOR EACH STATEMENT EXECUTE FUNCTION meshhook_notify_due();
