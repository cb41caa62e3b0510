-- Live-log subscribers' policies read their project once per statement.
--
-- The live-log server checks, for each subscriber, which changed rows it may
-- see: one lookup by primary key per row, under the subscriber's role and JWT
-- claims (src/realtime/auth.ts). With the shared policy each lookup evaluated
-- `meshhook_current_project()` again, which parses the claims (jsonb) every
-- time. As a sub-select it is an InitPlan, worked out once per statement:
-- Postgres CPU for 50 subscribers x 64 keys went from 27 to 20 ms a round, and
-- from 5.1 to 4.3 ms with 8 keys. The rows each role sees are the same.
--
-- The engine keeps the plain form: for its calls the sub-select made the
-- planner choose far worse plans (docs/performance.md, "Tried and not kept").
-- Subscribers only read, so their policies are FOR SELECT.
ALTER POLICY one_project ON runs TO meshhook_engine;
ALTER POLICY one_project ON run_events TO meshhook_engine;
CREATE POLICY subscriber_project ON runs FOR SELECT TO authenticated USING (project_id = (SELECT meshhook_current_project()));
CREATE POLICY subscriber_project ON run_events FOR SELECT TO authenticated USING (project_id = (SELECT meshhook_current_project()));
