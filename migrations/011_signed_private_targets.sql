-- A project's leave to call private addresses is signed with the engine's key.
--
-- allow_private_targets decides whether a project's http_call steps may reach
-- loopback, private and link-local addresses (the engine's own network). Someone
-- who can write the table could switch it on and point a run at an internal
-- service, and nothing in any run log would show it. The engine now signs the
-- permission when it grants it (`meshhook publish --allow-private-targets`) with
-- its chain key, which the database never holds; a worker treats an unsigned or
-- wrongly signed permission as no permission. Projects granted it before this
-- migration must be granted it again.
ALTER TABLE projects ADD COLUMN allow_private_targets_mac text;
GRANT UPDATE (allow_private_targets_mac) ON projects TO meshhook_engine;
