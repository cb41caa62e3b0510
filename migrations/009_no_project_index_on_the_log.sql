-- The log keeps one index: its primary key (run_id, seq). Everything the engine
-- and the live-log server read from it is one run's events, or events named by
-- their key (a live-log visibility check). An index led by project_id served no
-- query of its own, cost a second index entry for every event appended, and
-- invited the planner to scan a project's whole log for row-level security's
-- project filter (see 008). Reading a whole project (verify --all) goes by the
-- primary key in order, keeping the project's rows.
DROP INDEX run_events_by_project;
