-- The due runs were taken oldest first across every project: a project that sent ten thousand webhooks at once
-- held up the next webhook of every other project until its backlog was done (a run of another project started
-- just after such a burst of 300 waited for all 300). A worker's claim now takes the projects with due work in
-- turn: the oldest due run of each, then the second of each, and so on. Within a turn the projects come in a
-- random order: oldest first, the backlog's oldest run would win every turn against a run of another project that
-- came after the burst. A claim of n slots takes one run of each of n busy projects; a claim of one slot takes a
-- busy project's oldest run, each project as likely as any other. One project's backlog then delays another's run
-- by about one run per busy project, not by the backlog. (Which worker takes which run is not part of any run's
-- log, so a random choice here changes no decision.)
--
-- The projects with work are found by skipping from one to the next on an index led by the project (a loose
-- index scan): one probe per project with running or waiting runs, however long their backlogs, and none for
-- a project with none. A project whose only runs wait on timers not yet due costs that one probe.
CREATE INDEX runs_claimable_by_project ON runs (project_id, wake_at NULLS FIRST, created_at) WHERE status IN ('running', 'waiting');

CREATE OR REPLACE FUNCTION meshhook_due_runs(p_now timestamptz, p_limit integer) RETURNS TABLE (id uuid, project_id uuid)
  LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH RECURSIVE busy(project_id) AS (
    (SELECT r.project_id FROM runs r WHERE r.status IN ('running', 'waiting') ORDER BY r.project_id LIMIT 1)
    UNION ALL
    SELECT (SELECT r.project_id FROM runs r WHERE r.status IN ('running', 'waiting') AND r.project_id > b.project_id ORDER BY r.project_id LIMIT 1)
    FROM busy b WHERE b.project_id IS NOT NULL
  )
  SELECT d.id, d.project_id FROM busy b
  CROSS JOIN LATERAL (
    SELECT r.id, r.project_id, r.wake_at, r.created_at, row_number() OVER (ORDER BY r.wake_at NULLS FIRST, r.created_at) AS turn FROM (
      SELECT r.id, r.project_id, r.wake_at, r.created_at FROM runs r
      WHERE r.project_id = b.project_id AND r.status IN ('running', 'waiting') AND (r.wake_at IS NULL OR r.wake_at <= p_now)
      ORDER BY r.wake_at NULLS FIRST, r.created_at LIMIT p_limit
    ) r
  ) d
  WHERE b.project_id IS NOT NULL
  ORDER BY d.turn, random()
  LIMIT p_limit
$$;
