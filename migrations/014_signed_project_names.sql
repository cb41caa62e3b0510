-- A project's name is signed with the engine's key.
--
-- Everything a person types names a project by its slug (`--project acme`,
-- /hooks/acme/...), and the slug lives in one column someone with the
-- database can change: swapping two projects' slugs would send the owner's
-- `secrets set --project acme` into the other project's vault, and
-- `verify --all` would call the other project's runs acme's and find them
-- sound. The engine now signs (id, slug) when it creates a project, with its
-- chain key, which the database never holds; the CLI, the intake and verify
-- refuse a project whose name is not signed. A workflow's name needs no
-- column of its own: every published version signs its definition, and the
-- definition names the workflow. Projects made before this migration are
-- unsigned: `meshhook sign-project --project <slug>` signs one after showing
-- what it holds.
ALTER TABLE projects ADD COLUMN slug_mac text;
GRANT UPDATE (slug_mac) ON projects TO meshhook_engine;

-- a project by slug with its name's signature (or no row); how the CLI and the intake find the project to act for
CREATE FUNCTION meshhook_project_named(p_slug text) RETURNS TABLE (id uuid, slug_mac text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT id, slug_mac FROM projects WHERE slug = p_slug
$$;

-- every project with its name's signature, for commands that visit them one at a time
CREATE FUNCTION meshhook_projects_named() RETURNS TABLE (id uuid, slug text, slug_mac text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT id, slug, slug_mac FROM projects ORDER BY slug
$$;

REVOKE ALL ON FUNCTION meshhook_project_named(text), meshhook_projects_named() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meshhook_project_named(text), meshhook_projects_named() TO meshhook_engine;
