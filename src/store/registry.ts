import { randomBytes, randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { canonicalJson } from '../domain/canonical';
import { inProject } from '../db/scope';
import { Keyring } from '../security/keyring';
import { open, seal, signingAad } from '../security/vault';
import { definitionHash, validateDefinition, WorkflowDefinition } from '../domain/definition';
import { ChainKey, ChainKeys, checkVersionSignature, projectNameProblem, signPrivateTargets, signPrivateTargetsDenied, signProjectName, signVersion } from '../domain/hash-chain';
import { inexactNumberOf, parseJsonExact } from '../domain/exact-numbers';
import { exactJsonTypes } from './log-read';

/* Projects, workflows and their immutable published versions. */

export interface ProjectRow {
  id: string;
  slug: string;
}

export interface WorkflowRow {
  id: string;
  projectId: string;
  slug: string;
  /** null when the workflow has no sealed signing secret: then no webhook of it is accepted */
  signingSecret: string | null;
}

export interface PublishedVersion {
  projectId: string;
  workflowId: string;
  workflow: string;
  version: number;
  definitionHash: string;
  definition: WorkflowDefinition;
  /** true when this exact definition was already the latest version */
  unchanged: boolean;
}

export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

/** A published version whose stored definition no longer hashes to what was published. */
export class TamperedDefinitionError extends Error {
  constructor(readonly workflowId: string, readonly version: number, why = 'was changed after it was published') {
    super(`version ${version} of workflow ${workflowId} ${why}; refusing to run it`);
    this.name = 'TamperedDefinitionError';
  }
}

/** A project whose name is not the one the engine signed (or is not signed at all): nothing is done in it by that name. */
export class TamperedProjectError extends Error {
  constructor(readonly slug: string, readonly problem: string) {
    super(`${problem}; refusing to act for "${slug}" (if the project is yours and its name was never signed, check it and run \`meshhook sign-project --project ${slug}\`)`);
    this.name = 'TamperedProjectError';
  }
}

/**
 * A project's id by slug, creating the project when it is new; a new project's name is signed with the chain
 * key. An existing project must already carry its signed name: signing one that does not is `signProject`,
 * an owner's deliberate act, never a side effect of publishing into it.
 */
export async function ensureProject(db: Pool, chain: ChainKey, keys: ChainKeys, slug: string, name = slug): Promise<ProjectRow> {
  const found = await findProject(db, slug, keys);
  if (found) return found;
  const { rows } = await db.query<{ id: string }>('SELECT meshhook_ensure_project($1, $2) AS id', [slug, name]);
  const id = rows[0].id;
  // made just now (or by a publisher racing this one, under the same name): sign the name it was made with
  await inProject(db, id, (c) => c.query('UPDATE projects SET slug_mac = $2 WHERE id = $1 AND slug = $3 AND slug_mac IS NULL', [id, signProjectName(chain, id, slug), slug]));
  return (await findProject(db, slug, keys)) ?? { id, slug };
}

/** A project by slug as the database has it, signed name or not (for sign-project, which shows it before signing). */
export async function projectNamed(db: Pool, slug: string): Promise<{ id: string; signature: string | null } | null> {
  const { rows } = await db.query<{ id: string; slug_mac: string | null }>('SELECT id, slug_mac FROM meshhook_project_named($1)', [slug]);
  return rows[0] ? { id: rows[0].id, signature: rows[0].slug_mac } : null;
}

/**
 * Sign the name of project `id` as `slug`, an owner's deliberate act (projects made before names were signed);
 * false when the project is not called that (any more).
 */
export async function signProject(db: Pool, chain: ChainKey, id: string, slug: string): Promise<boolean> {
  const res = await inProject(db, id, (c) => c.query('UPDATE projects SET slug_mac = $2 WHERE id = $1 AND slug = $3', [id, signProjectName(chain, id, slug), slug]));
  return res.rowCount === 1;
}

/** What a project holds, by workflow: its name, the name its latest version was published for, and its runs. */
export async function projectContents(db: Pool, id: string): Promise<Array<{ workflow: string; publishedAs: string | null; runs: number }>> {
  return inProject(db, id, async (c) =>
    (
      await c.query(
        `SELECT w.slug, (SELECT v.definition->>'name' FROM workflow_versions v WHERE v.workflow_id = w.id ORDER BY v.version DESC LIMIT 1) AS published_as,
                (SELECT count(*)::int FROM runs r WHERE r.workflow_id = w.id) AS runs
         FROM workflows w WHERE w.project_id = $1 ORDER BY w.slug`,
        [id],
      )
    ).rows.map((r) => ({ workflow: r.slug, publishedAs: r.published_as, runs: r.runs })),
  );
}

/**
 * Whether the project's http_call steps may call private, loopback and link-local addresses (off by default).
 * Granting it signs it with the engine's chain key: workers honour only a signed grant.
 */
export async function setAllowPrivateTargets(db: Pool, chain: ChainKey, projectId: string, allow: boolean): Promise<void> {
  // a leave taken away is signed too: one cleared in the table alone is then told from the engine's (verify --checkpoints)
  const at = new Date().toISOString();
  const mac = allow ? signPrivateTargets(chain, projectId, at) : signPrivateTargetsDenied(chain, projectId, at);
  await inProject(db, projectId, (c) =>
    c.query('UPDATE projects SET allow_private_targets = $1, allow_private_targets_mac = $2 WHERE id = $3', [allow, mac, projectId]),
  );
}

/**
 * A project by slug, or null; the one lookup that does not need a project already chosen. Throws
 * TamperedProjectError when the slug is not the name the engine signed for the project it leads to.
 */
export async function findProject(db: Pool, slug: string, keys: ChainKeys): Promise<ProjectRow | null> {
  const { rows } = await db.query<{ id: string; slug_mac: string | null }>('SELECT id, slug_mac FROM meshhook_project_named($1)', [slug]);
  if (!rows[0]) return null;
  const problem = projectNameProblem(keys, rows[0].id, slug, rows[0].slug_mac);
  if (problem) throw new TamperedProjectError(slug, problem);
  return { id: rows[0].id, slug };
}

export async function findWorkflow(db: Pool, keyring: Keyring, projectSlug: string, workflowSlug: string): Promise<WorkflowRow | null> {
  const project = await findProject(db, projectSlug, keyring.chainKeys());
  if (!project) return null;
  return findWorkflowIn(db, keyring, project.id, workflowSlug);
}

/** A workflow of a project already chosen (row-level security shows no other project's), its signing secret opened. */
export async function findWorkflowIn(db: Pool, keyring: Keyring, projectId: string, workflowSlug: string): Promise<WorkflowRow | null> {
  const rows = await inProject(db, projectId, async (c) =>
    (await c.query('SELECT id, project_id, slug, signing_secret_sealed FROM workflows WHERE project_id = $1 AND slug = $2', [projectId, workflowSlug]))
      .rows,
  );
  const r = rows[0];
  return r ? { id: r.id, projectId: r.project_id, slug: r.slug, signingSecret: signingSecretOf(keyring, r) } : null;
}

/**
 * What the intake needs of a webhook's target, in one call (migrations/023_intake_target_in_one_call.sql): the
 * project (its name's signature checked: TamperedProjectError), the workflow with its signing secret opened, and
 * the row of its latest version, checked only once the webhook's signature holds (`IntakeTarget.latest`). Null
 * when there is no such project or workflow.
 *
 * What it opened and verified is kept (`IntakeCache`), keyed by the exact bytes it came from, so a webhook of a
 * known workflow costs one round trip and no cryptography beyond its own signature; a row changed in any way (a
 * version edited in place, a secret resealed) is a new key and is checked from scratch.
 */
export async function findIntakeTarget(
  db: Pool,
  keyring: Keyring,
  projectSlug: string,
  workflowSlug: string,
  cache: IntakeCache,
): Promise<IntakeTarget | null> {
  const { rows } = await db.query<{
    project_id: string;
    slug_mac: string | null;
    workflow_id: string | null;
    signing_secret_sealed: string | null;
    version: number | null;
    definition: string | null;
    definition_hash: string | null;
    definition_mac: string | null;
  }>('SELECT * FROM meshhook_intake_target($1, $2)', [projectSlug, workflowSlug]);
  const r = rows[0];
  if (!r) return null;
  const problem = projectNameProblem(keyring.chainKeys(), r.project_id, projectSlug, r.slug_mac);
  if (problem) throw new TamperedProjectError(projectSlug, problem);
  if (!r.workflow_id) return null;
  const sealed = r.signing_secret_sealed;
  let signingSecret: string | null = null;
  if (sealed) {
    const key = `${r.project_id}:${r.workflow_id}:${sealed}`;
    signingSecret = cache.secrets.get(key) ?? null;
    if (signingSecret === null) {
      signingSecret = signingSecretOf(keyring, { id: r.workflow_id, project_id: r.project_id, signing_secret_sealed: sealed });
      if (signingSecret !== null) remember(cache.secrets, key, signingSecret);
    }
  }
  const version =
    r.version === null
      ? null
      : { project_id: r.project_id, workflow_id: r.workflow_id, version: r.version, definitionText: r.definition!, definition_hash: r.definition_hash!, definition_mac: r.definition_mac };
  return {
    project: { id: r.project_id, slug: projectSlug },
    workflow: { id: r.workflow_id, projectId: r.project_id, slug: workflowSlug, signingSecret },
    latest(): LoadedVersion {
      if (!version) throw new NotFoundError(`workflow ${r.workflow_id} has no published version`);
      const key = `${version.project_id}:${version.workflow_id}:${version.version}:${version.definition_hash}:${version.definition_mac ?? ''}:${version.definitionText}`;
      const known = cache.versions.get(key);
      if (known) return known;
      const loaded = toLoaded({ ...version, definition: parseJsonExact(version.definitionText) as WorkflowDefinition }, { keys: keyring.chainKeys() });
      remember(cache.versions, key, loaded);
      return loaded;
    },
  };
}

export interface IntakeTarget {
  project: ProjectRow;
  workflow: WorkflowRow;
  /** the latest published version, checked (NotFoundError when none, TamperedDefinitionError when not as published) */
  latest(): LoadedVersion;
}

/** Secrets opened and versions verified by the intake, by the exact row text they came from. */
export interface IntakeCache {
  secrets: Map<string, string>;
  versions: Map<string, LoadedVersion>;
}

export function intakeCache(): IntakeCache {
  return { secrets: new Map(), versions: new Map() };
}

/** Bounded: the oldest entry goes once a map holds this many. */
const INTAKE_CACHE_ENTRIES = 512;

function remember<V>(m: Map<string, V>, key: string, value: V): void {
  m.set(key, value);
  if (m.size > INTAKE_CACHE_ENTRIES) m.delete(m.keys().next().value!);
}

/**
 * A workflow's signing secret, sealed with the engine's key. The plain-text column of the first releases is
 * never read: anyone who can write the table could put a secret of their own there and sign webhooks with it.
 */
function signingSecretOf(keyring: Keyring, r: { id: string; project_id: string; signing_secret_sealed: string | null }): string | null {
  return r.signing_secret_sealed ? open(keyring, r.signing_secret_sealed, signingAad(r.project_id, r.id)) : null;
}

/**
 * Validate and publish a definition as the workflow's next version. Publishing
 * the same definition as the latest version again is a no-op.
 */
export async function publishWorkflow(
  db: Pool,
  keyring: Keyring,
  projectSlug: string,
  raw: unknown,
  opts: { signingSecret?: string } = {},
): Promise<PublishedVersion & { signingSecret: string }> {
  const definition = validateDefinition(raw);
  const hash = definitionHash(definition);
  const project = await ensureProject(db, keyring.chainKey(), keyring.chainKeys(), projectSlug);
  return inProject(db, project.id, async (client) => {
    const secret = opts.signingSecret ?? `whsec_${randomBytes(24).toString('hex')}`;
    // the id is made here so the sealed secret can be bound to it; an existing workflow keeps its own
    const newId = randomUUID();
    const wf = await client.query(
      `INSERT INTO workflows (id, project_id, slug, signing_secret_sealed) VALUES ($1, $2, $3, $4)
       ON CONFLICT (project_id, slug) DO UPDATE SET slug = EXCLUDED.slug
       RETURNING id, project_id, signing_secret_sealed`,
      [newId, project.id, definition.name, seal(keyring, secret, signingAad(project.id, newId))],
    );
    const workflowId: string = wf.rows[0].id;
    if (!wf.rows[0].signing_secret_sealed) {
      // a workflow left with no sealed secret (only the plain column of the first releases, never read) gets one now
      wf.rows[0].signing_secret_sealed = seal(keyring, secret, signingAad(project.id, workflowId));
      await client.query('UPDATE workflows SET signing_secret_sealed = $2, signing_secret = NULL WHERE id = $1', [workflowId, wf.rows[0].signing_secret_sealed]);
    }
    // serialise publishers of one workflow so version numbers stay dense
    await client.query('SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE', [workflowId]);
    const latest = await client.query(
      'SELECT version, definition_hash FROM workflow_versions WHERE workflow_id = $1 ORDER BY version DESC LIMIT 1',
      [workflowId],
    );
    let version: number;
    let unchanged = false;
    if (latest.rows[0]?.definition_hash === hash) {
      version = latest.rows[0].version;
      unchanged = true;
    } else {
      version = (latest.rows[0]?.version ?? 0) + 1;
      // signed with a key the database never holds: an edit made behind the engine's back, hash and all, shows
      const mac = signVersion(keyring.chainKey(), { projectId: project.id, workflowId, version, definitionHash: hash });
      await client.query(
        `INSERT INTO workflow_versions (project_id, workflow_id, version, definition, definition_hash, definition_mac)
         VALUES ($1, $2, $3, $4, $5, $6)`,
        [project.id, workflowId, version, canonicalJson(definition), hash, mac],
      );
    }
    return {
      projectId: project.id,
      workflowId,
      workflow: definition.name,
      version,
      definitionHash: hash,
      definition,
      unchanged,
      signingSecret: signingSecretOf(keyring, wf.rows[0])!,
    };
  });
}

export interface LoadedVersion {
  workflowId: string;
  version: number;
  definition: WorkflowDefinition;
  definitionHash: string;
  /** why the version is not as published (its hash or its signature), when it was checked; null when it is */
  tampered: string | null;
}

export interface LoadOptions {
  /** hand back a version that is not as published, with `tampered` saying why (for verify, which reports it) */
  allowTampered?: boolean;
  /** the chain keys to check the version's signature with (a keyring's chainKeys()); unchecked without them */
  keys?: ChainKeys;
}

export async function latestVersion(db: Pool, projectId: string, workflowId: string, opts: LoadOptions = {}): Promise<LoadedVersion> {
  const { rows } = await inProject(db, projectId, (c) => c.query({
    text: 'SELECT project_id, workflow_id, version, definition, definition_hash, definition_mac FROM workflow_versions WHERE workflow_id = $1 ORDER BY version DESC LIMIT 1',
    values: [workflowId],
    types: exactJsonTypes(),
  }));
  if (!rows[0]) throw new NotFoundError(`workflow ${workflowId} has no published version`);
  return toLoaded(rows[0], opts);
}

export async function loadVersion(db: Pool, projectId: string, workflowId: string, version: number, opts: LoadOptions = {}): Promise<LoadedVersion> {
  return inProject(db, projectId, (c) => readVersion(c, workflowId, version, opts));
}

/** loadVersion inside a transaction that already acts for the workflow's project. */
export async function readVersion(c: PoolClient, workflowId: string, version: number, opts: LoadOptions = {}): Promise<LoadedVersion> {
  const { rows } = await c.query({
    text: 'SELECT project_id, workflow_id, version, definition, definition_hash, definition_mac FROM workflow_versions WHERE workflow_id = $1 AND version = $2',
    values: [workflowId, version],
    types: exactJsonTypes(),
  });
  if (!rows[0]) throw new NotFoundError(`workflow ${workflowId} has no version ${version}`);
  return toLoaded(rows[0], opts);
}

/**
 * The database refuses edits to published versions, but someone with DBA
 * rights can switch that off. Re-hashing on load catches a definition edited
 * without its hash; the signature, checked when keys are given, catches both
 * edited together before a new run starts; workers also hold the hash against
 * the one each run's first event pinned.
 */
function toLoaded(
  r: { project_id: string; workflow_id: string; version: number; definition: WorkflowDefinition; definition_hash: string; definition_mac: string | null },
  opts: LoadOptions,
): LoadedVersion {
  let tampered: string | null = definitionHash(r.definition) !== r.definition_hash ? 'was changed after it was published' : null;
  // its hash covers the doubles its numbers read as: other digits beyond them were written outside the engine
  const inexact = inexactNumberOf(r.definition);
  if (!tampered && inexact !== null) tampered = `was changed after it was published: it holds the number ${inexact.length > 40 ? `${inexact.slice(0, 40)}…` : inexact}, which reads as ${Number(inexact)}`;
  if (!tampered && opts.keys) {
    const why = checkVersionSignature(opts.keys, { projectId: r.project_id, workflowId: r.workflow_id, version: r.version, definitionHash: r.definition_hash }, r.definition_mac);
    if (why) tampered = `is not as the engine published it: ${why}`;
  }
  if (tampered && !opts.allowTampered) throw new TamperedDefinitionError(r.workflow_id, r.version, tampered);
  return { workflowId: r.workflow_id, version: r.version, definition: r.definition, definitionHash: r.definition_hash, tampered };
}

/**
 * Every project, one at a time: the engine never sees two projects in one transaction. With keys, each
 * carries what is wrong with its name (see findProject), or null.
 */
export async function listProjects(db: Pool, keys?: ChainKeys): Promise<Array<ProjectRow & { nameProblem: string | null }>> {
  const { rows } = await db.query<{ id: string; slug: string; slug_mac: string | null }>('SELECT id, slug, slug_mac FROM meshhook_projects_named()');
  return rows.map((r) => ({ id: r.id, slug: r.slug, nameProblem: keys ? projectNameProblem(keys, r.id, r.slug, r.slug_mac) : null }));
}
