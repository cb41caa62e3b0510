import { appendFileSync, closeSync, existsSync, openSync, readSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import path from 'node:path';
import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import { latestSeal } from './schema-seal';
import { ChainKey, ChainKeys, checkHeadSignature, checkVersionSignature, hmacSha256Hex, privateTargetsDeniedAt, privateTargetsGrant, RunHead, secretRemovedAt, signatureParts, signHead, signVersion, VersionIdentity } from '../domain/hash-chain';

/*
 * Checkpoints: signed run heads written outside the database, to an
 * append-only file. Someone with full database access can roll both the log
 * and the run views back to an earlier, consistent state (one they copied
 * before); the signatures would still hold. A checkpoint taken after that
 * earlier state remembers the later head, and `verify --checkpoints` finds
 * the log no longer reaching it. Workers can write one for every batch they
 * commit (MESHHOOK_HEAD_JOURNAL); `meshhook checkpoint` writes one for every
 * run at once.
 *
 * One JSON object per line: {"projectId","runId","seq","hash","at","sig"}.
 *
 * `meshhook checkpoint` also remembers each workflow's latest published
 * version, {"kind":"version","projectId","workflowId","version",
 * "definitionHash","at","sig"}: a version deleted behind the engine's back
 * makes the intake start new runs on the one before it (an older URL, an older
 * bug), and every row left is genuine, so only a memory outside the database
 * can tell.
 *
 * The schema's latest seal, {"kind":"seal","sealedAt","at","sig"}: see
 * SealCheckpoint.
 *
 * And each project's leave to call private addresses, {"kind":"grant",
 * "projectId","allowed","grantedAt","at","sig"}: a grant is signed, but a
 * grant taken away can be given back by writing the old signed one back, and
 * only a memory of the leave taken away tells that from a new grant.
 */

export interface GrantCheckpoint {
  kind: 'grant';
  projectId: string;
  /** whether the project might call private addresses when the checkpoint was taken */
  allowed: boolean;
  /** when that grant was signed (null: taken away, or signed before grants carried their time) */
  grantedAt: string | null;
  at: string;
  /** grantCheckpointSig() */
  sig: string;
}

function grantCheckpointText(g: Omit<GrantCheckpoint, 'sig' | 'kind'>): string {
  return `meshhook-grant-checkpoint\n${g.projectId}\n${g.allowed}\n${g.grantedAt ?? ''}\n${g.at}`;
}

/** A checkpoint line's signature ("<kid>:<hex HMAC>") over the text that says what it remembers. */
function signLine(chain: ChainKey, text: string): string {
  return `${chain.kid}:${hmacSha256Hex(chain.key, text)}`;
}

function lineGenuine(keys: ChainKeys, sig: unknown, text: string): boolean {
  if (typeof sig !== 'string') return false;
  const { key, mac } = signatureParts(keys, sig);
  return key !== null && mac === hmacSha256Hex(key, text);
}

/**
 * The schema's latest seal as a checkpoint saw it, {"kind":"seal","sealedAt","at","sig"}: a seal signs its
 * time, so an earlier seal written back after a later one (to let an earlier, weaker schema pass) is older
 * than what the checkpoint saw.
 */
export interface SealCheckpoint {
  kind: 'seal';
  sealedAt: string;
  at: string;
  sig: string;
}

function sealCheckpointText(c: Omit<SealCheckpoint, 'sig' | 'kind'>): string {
  return `meshhook-seal-checkpoint\n${c.sealedAt}\n${c.at}`;
}

/**
 * When a vault secret's value was sealed, as a checkpoint saw it, {"kind":"secret","projectId","name",
 * "sealedAt","at","sig"}: a sealed value carries its time where no one can change it, so an earlier value
 * written back (the key it held before, which its service should have revoked) is older than what the
 * checkpoint saw.
 */
export interface SecretCheckpoint {
  kind: 'secret';
  projectId: string;
  name: string;
  sealedAt: string;
  at: string;
  sig: string;
}

/**
 * Which vault secrets a project held when a checkpoint was taken, {"kind":"vault","projectId","names","at","sig"}:
 * a secret deleted (revoked) and then written back from a copy still opens, and its sealed time is the one a
 * checkpoint taken before the deletion saw, so only a memory of the secret gone tells it apart.
 */
export interface VaultCheckpoint {
  kind: 'vault';
  projectId: string;
  names: string[];
  at: string;
  sig: string;
}

function vaultCheckpointText(c: Omit<VaultCheckpoint, 'sig' | 'kind'>): string {
  return `meshhook-vault-checkpoint\n${c.projectId}\n${[...c.names].sort().join('\n')}\n${c.at}`;
}

/** When each vault secret of a project was sealed (null: before values carried their time; 'unreadable': it does not open). */
export type SecretTimes = (projectId: string) => Promise<Array<{ name: string; sealedAt: string | null | 'unreadable' }>>;

function secretCheckpointText(c: Omit<SecretCheckpoint, 'sig' | 'kind'>): string {
  return `meshhook-secret-checkpoint\n${c.projectId}\n${c.name}\n${c.sealedAt}\n${c.at}`;
}

export interface VersionCheckpoint extends VersionIdentity {
  kind: 'version';
  at: string;
  /** signVersion(): "<kid>:<hex>" */
  sig: string;
}

export interface Checkpoint extends RunHead {
  at: string;
  /** signHead(): "<kid>:<hex>" */
  sig: string;
}

export function checkpointLine(chain: ChainKey, head: RunHead, at: Date): string {
  const cp: Checkpoint = { ...head, at: at.toISOString(), sig: signHead(chain, head) };
  return JSON.stringify(cp) + '\n';
}

/** What a verifier knows from checkpoint files: the furthest signed head of every run, and what was wrong with the files. */
/** Every line of a kind, per project, in file order: appended, never copied per line. */
function appendTo<T>(lists: Map<string, T[]>, key: string, value: T): void {
  const list = lists.get(key);
  if (list) list.push(value);
  else lists.set(key, [value]);
}

export class CheckpointIndex {
  private readonly latest = new Map<string, Checkpoint>();
  private readonly latestVersions = new Map<string, VersionCheckpoint>();
  private readonly latestGrants = new Map<string, GrantCheckpoint>();
  private readonly grantHistory = new Map<string, GrantCheckpoint[]>();
  private latestSeal: SealCheckpoint | null = null;
  private readonly latestSecrets = new Map<string, SecretCheckpoint>();
  private readonly vaults = new Map<string, VaultCheckpoint[]>();
  readonly problems: string[] = [];
  lines = 0;

  /** the files read so far, by their resolved paths */
  readonly files = new Set<string>();

  static load(files: string[], keys: ChainKeys): CheckpointIndex {
    const index = new CheckpointIndex();
    for (const file of files) index.add(file, keys);
    return index;
  }

  /** An index of runs' checkpoints already read and checked (what a verify thread is handed: runs() of another index). */
  static ofRuns(runs: Checkpoint[]): CheckpointIndex {
    const index = new CheckpointIndex();
    for (const cp of runs) index.latest.set(cp.runId, cp);
    return index;
  }

  /** Read one more file into the index. */
  add(file: string, keys: ChainKeys): void {
    const index = this;
    index.files.add(path.resolve(file));
    if (!existsSync(file)) {
      index.problems.push(`${file}: no such checkpoint file`);
      return;
    }
    // the last line of a journal may be cut short by a crash; anything else is damage (known once the file is read)
    const unreadable: number[] = [];
    const count = eachLine(file, (line, i) => {
      if (line === null) {
        index.lines++;
        unreadable.push(i);
        return;
      }
      if (!line.trim()) return;
      index.lines++;
      let cp: Checkpoint;
      try {
        cp = JSON.parse(line) as Checkpoint;
      } catch {
        unreadable.push(i);
        return;
      }
      if ((cp as unknown as SecretCheckpoint).kind === 'secret') {
        const c = cp as unknown as SecretCheckpoint;
        if (!lineGenuine(keys, c.sig, secretCheckpointText(c))) {
          index.problems.push(`${file}:${i + 1}: checkpoint of vault secret ${String(c.name).slice(0, 63)} is not genuine`);
          return;
        }
        const k = `${c.projectId}\u0000${c.name}`;
        const known = index.latestSecrets.get(k);
        if (!known || c.sealedAt > known.sealedAt) index.latestSecrets.set(k, c);
        return;
      }
      if ((cp as unknown as VaultCheckpoint).kind === 'vault') {
        const c = cp as unknown as VaultCheckpoint;
        if (!Array.isArray(c.names) || !lineGenuine(keys, c.sig, vaultCheckpointText(c))) {
          index.problems.push(`${file}:${i + 1}: checkpoint of project ${String(c.projectId).slice(0, 36)}'s vault is not genuine`);
          return;
        }
        appendTo(index.vaults, c.projectId, c);
        return;
      }
      if ((cp as unknown as SealCheckpoint).kind === 'seal') {
        const c = cp as unknown as SealCheckpoint;
        if (!lineGenuine(keys, c.sig, sealCheckpointText(c))) {
          index.problems.push(`${file}:${i + 1}: checkpoint of the schema's seal is not genuine`);
          return;
        }
        if (!index.latestSeal || c.sealedAt > index.latestSeal.sealedAt) index.latestSeal = c;
        return;
      }
      if ((cp as unknown as GrantCheckpoint).kind === 'grant') {
        const g = cp as unknown as GrantCheckpoint;
        if (!lineGenuine(keys, g.sig, grantCheckpointText(g))) {
          index.problems.push(`${file}:${i + 1}: checkpoint of project ${String(g.projectId).slice(0, 36)}'s leave to call private addresses is not genuine`);
          return;
        }
        const knownGrant = index.latestGrants.get(g.projectId);
        if (!knownGrant || g.at > knownGrant.at) index.latestGrants.set(g.projectId, g);
        appendTo(index.grantHistory, g.projectId, g);
        return;
      }
      if ((cp as unknown as VersionCheckpoint).kind === 'version') {
        const v = cp as unknown as VersionCheckpoint;
        const forgedVersion = checkVersionSignature(keys, { projectId: v.projectId, workflowId: v.workflowId, version: v.version, definitionHash: v.definitionHash }, v.sig);
        if (forgedVersion) {
          index.problems.push(`${file}:${i + 1}: checkpoint of version ${Number(v.version)} of workflow ${String(v.workflowId).slice(0, 36)} is not genuine (${forgedVersion})`);
          return;
        }
        const knownVersion = index.latestVersions.get(v.workflowId);
        if (!knownVersion || v.version > knownVersion.version) index.latestVersions.set(v.workflowId, v);
        return;
      }
      const forged = checkHeadSignature(keys, cp, cp.sig);
      if (forged) {
        index.problems.push(`${file}:${i + 1}: checkpoint of run ${String(cp.runId).slice(0, 36)} is not genuine (${forged})`);
        return;
      }
      const known = index.latest.get(cp.runId);
      if (!known || cp.seq > known.seq) index.latest.set(cp.runId, cp);
    });
    for (const i of unreadable) if (i < count - 2) index.problems.push(`${file}:${i + 1}: not a checkpoint line`);
  }

  /** The furthest head a checkpoint remembers for a run. */
  of(runId: string): Checkpoint | null {
    return this.latest.get(runId) ?? null;
  }

  runs(): Checkpoint[] {
    return [...this.latest.values()];
  }

  /** The latest sealed value a checkpoint saw of each vault secret. */
  secrets(): SecretCheckpoint[] {
    return [...this.latestSecrets.values()];
  }

  /** Which vault secrets each checkpoint saw a project hold. */
  vaultsOf(projectId: string): VaultCheckpoint[] {
    return this.vaults.get(projectId) ?? [];
  }

  /** The latest seal of the schema a checkpoint saw (null: none did). */
  seal(): SealCheckpoint | null {
    return this.latestSeal;
  }

  /** Every checkpoint of a project's leave to call private addresses, in no particular order. */
  grantsOf(projectId: string): GrantCheckpoint[] {
    return this.grantHistory.get(projectId) ?? [];
  }

  /** The latest a checkpoint saw of each project's leave to call private addresses. */
  grants(): GrantCheckpoint[] {
    return [...this.latestGrants.values()];
  }

  /** The latest version a checkpoint saw published, for each workflow it saw. */
  versions(): VersionCheckpoint[] {
    return [...this.latestVersions.values()];
  }
}

/** Why a log does not reach what a checkpoint remembers, or null when it does. */
export function checkAgainstCheckpoint(cp: Checkpoint | null, events: ReadonlyArray<{ seq: number; hash: string }>): string | null {
  return cp ? checkpointProblem(cp, events[cp.seq - 1] ?? null, events.length) : null;
}

/** The same check on a log read as a stream: `e` is the log's event in the checkpoint's position (if it has one), `length` how many it has. */
export function checkpointProblem(cp: Checkpoint, e: { hash: string } | null, length: number): string | null {
  if (!e) return `a checkpoint taken ${cp.at} saw event ${cp.seq}, but the log ends at event ${length}: the log was cut back`;
  if (e.hash !== cp.hash) return `a checkpoint taken ${cp.at} saw a different event ${cp.seq}: the log was rewritten`;
  return null;
}

/**
 * For each project given, every version a checkpoint saw published that the database no longer holds as it was
 * (deleted, or another definition under its number): the intake would start new runs on an earlier version.
 */
export async function versionsGone(db: Pool, index: CheckpointIndex, projectIds: string[]): Promise<Array<VersionCheckpoint & { problem: string }>> {
  const out: Array<VersionCheckpoint & { problem: string }> = [];
  for (const projectId of projectIds) {
    const wanted = index.versions().filter((v) => v.projectId === projectId);
    if (!wanted.length) continue;
    const held = new Map<string, string>();
    const names = new Map<string, string>();
    await inProject(db, projectId, async (c) => {
      for (const r of (await c.query('SELECT workflow_id, version, definition_hash FROM workflow_versions WHERE project_id = $1', [projectId])).rows)
        held.set(`${r.workflow_id}:${r.version}`, r.definition_hash);
      for (const r of (await c.query('SELECT id, slug FROM workflows WHERE project_id = $1', [projectId])).rows) names.set(r.id, r.slug);
    });
    for (const v of wanted) {
      const hash = held.get(`${v.workflowId}:${v.version}`);
      if (hash === v.definitionHash) continue;
      const workflow = names.has(v.workflowId) ? `"${names.get(v.workflowId)}"` : `${v.workflowId} (gone too)`;
      out.push({
        ...v,
        problem:
          hash === undefined
            ? `a checkpoint taken ${v.at} saw version ${v.version} of workflow ${workflow} published, and it no longer exists: new runs would start on an earlier version`
            : `a checkpoint taken ${v.at} saw version ${v.version} of workflow ${workflow} published with another definition (${v.definitionHash.slice(0, 12)}, now ${hash.slice(0, 12)})`,
      });
    }
  }
  return out;
}

/**
 * For each project given, a leave to call private addresses that stands now on a grant signed before the
 * latest checkpoint that saw the leave taken away or granted anew: an old grant written back.
 */
export async function grantsRolledBack(db: Pool, index: CheckpointIndex, keys: ChainKeys, projectIds: string[]): Promise<Array<{ projectId: string; problem: string }>> {
  const out: Array<{ projectId: string; problem: string }> = [];
  for (const projectId of projectIds) {
    const seen = index.grantsOf(projectId);
    if (!seen.length) continue;
    const row = await inProject(db, projectId, async (c) =>
      (await c.query('SELECT allow_private_targets, allow_private_targets_mac FROM projects WHERE id = $1', [projectId])).rows[0],
    );
    if (!row?.allow_private_targets) {
      // taken away since a checkpoint saw it granted: the engine signs when it takes a leave away, so a flag cleared
      // in the table alone (every private call of the project's runs then refused, its runs failing) is named
      // (the latest checkpoint is the baseline: one that saw the leave already taken away accepted how it went)
      const latest = [...seen].sort((x, y) => (x.at < y.at ? 1 : -1))[0];
      const granted = latest?.allowed ? latest : null;
      const deniedAt = row ? privateTargetsDeniedAt(keys, projectId, row.allow_private_targets_mac) : null;
      if (granted && !(deniedAt !== null && (granted.grantedAt === null || deniedAt >= granted.grantedAt))) {
        out.push({
          projectId,
          problem:
            `a checkpoint taken ${granted.at} saw the project's leave to call private addresses granted ${granted.grantedAt ?? 'before grants carried their time'}, ` +
            `but it is ${row ? 'taken away' : 'gone'} now without the engine's signed word (${deniedAt ? `a denial signed ${deniedAt}, before that grant` : 'no signed denial'}): taken away behind the engine's back`,
        });
      }
      continue;
    }
    const now = privateTargetsGrant(keys, projectId, row.allow_private_targets_mac);
    // an unsigned flag grants nothing (workers refuse it); the grant a checkpoint saw, or a later one, is as it should
    // be. Every checkpoint counts, not only the latest: a checkpoint taken after an old grant was written back sees
    // that grant, and must not make the one that saw the leave taken away forgotten
    const cp = seen
      .filter((c) => !((c.allowed && now.grantedAt === c.grantedAt) || (now.grantedAt !== null && now.grantedAt >= c.at)))
      .sort((x, y) => (x.at < y.at ? 1 : -1))[0];
    if (!now.granted || !cp) continue;
    out.push({
      projectId,
      problem:
        `a checkpoint taken ${cp.at} saw the project's leave to call private addresses ${cp.allowed ? `granted ${cp.grantedAt ?? 'before grants carried their time'}` : 'taken away'}, ` +
        `but it stands now on a grant signed ${now.grantedAt ?? 'before grants carried their time'}: an old grant written back behind the engine's back`,
    });
  }
  return out;
}

/**
 * For each project given, a vault secret whose value now was sealed before the one a checkpoint saw: an
 * earlier value written back (workers would send the key it held before).
 */
export async function secretsRolledBack(index: CheckpointIndex, times: SecretTimes, projectIds: string[]): Promise<Array<{ projectId: string; problem: string }>> {
  const out: Array<{ projectId: string; problem: string }> = [];
  for (const projectId of projectIds) {
    const wanted = index.secrets().filter((c) => c.projectId === projectId);
    const vaults = index.vaultsOf(projectId);
    if (!wanted.length && !vaults.length) continue;
    // a name held twice (its key's uniqueness switched off for a moment behind the engine's back: a worker reads the
    // rows in whatever order they come) is judged by its earliest value, the one a worker may send
    const now = new Map<string, string | null | 'unreadable'>();
    for (const t of await times(projectId)) {
      const had = now.get(t.name);
      const earlier = t.sealedAt !== 'unreadable' && (had === undefined || had === 'unreadable' || t.sealedAt === null || (had !== null && t.sealedAt < had));
      if (had === undefined || earlier) now.set(t.name, t.sealedAt);
    }
    // a secret a checkpoint saw gone, holding a value sealed before that checkpoint: a deleted secret written back
    for (const [name, sealedAt] of now) {
      if (sealedAt === 'unreadable') continue;
      const sawGone = vaults.filter((v) => !v.names.includes(name) && (sealedAt === null || sealedAt < v.at)).sort((x, y) => (x.at < y.at ? 1 : -1))[0];
      if (!sawGone) continue;
      out.push({
        projectId,
        problem: `a checkpoint taken ${sawGone.at} saw no vault secret ${name}, but it holds a value sealed ${sealedAt ?? 'before values carried their time'}, before that checkpoint: a deleted secret written back behind the engine's back`,
      });
    }
    for (const c of wanted) {
      const sealedAt = now.get(c.name);
      // a secret deleted since is not a value written back (and a call that needs it fails, it sends nothing)
      if (sealedAt === undefined || sealedAt === 'unreadable' || (sealedAt !== null && sealedAt >= c.sealedAt)) continue;
      out.push({
        projectId,
        problem: `a checkpoint taken ${c.at} saw vault secret ${c.name} sealed ${c.sealedAt}, but its value now was sealed ${sealedAt ?? 'before values carried their time'}: an earlier value written back behind the engine's back`,
      });
    }
  }
  return out;
}

/** A project's vault as it is now: the names of its secrets, and each removal recorded (as stored, checked here). */
export type VaultNow = (projectId: string) => Promise<{ names: string[]; removals: Map<string, string> }>;

/**
 * For each project given, a vault secret a checkpoint saw that is gone now without a genuine removal of it signed
 * at or after the latest checkpoint that saw it: deleted behind the engine's back (every call that needs it then
 * fails with SECRET_MISSING, and nothing else names why). Every checkpoint counts, not only the latest: one taken
 * after the deletion sees the secret gone, and must not make the one that saw it forgotten. A removal is the
 * engine's signature over the project, the name and the time, so one copied from another secret or project, or
 * an earlier removal of this one written back, does not stand for it.
 */
export async function secretsRemovedUnsigned(index: CheckpointIndex, keys: ChainKeys, vault: VaultNow, projectIds: string[]): Promise<Array<{ projectId: string; name: string; problem: string }>> {
  const out: Array<{ projectId: string; name: string; problem: string }> = [];
  for (const projectId of projectIds) {
    // the latest time a checkpoint saw each secret held
    const saw = new Map<string, string>();
    const seen = (name: string, at: string): void => {
      const known = saw.get(name);
      if (known === undefined || at > known) saw.set(name, at);
    };
    for (const v of index.vaultsOf(projectId)) for (const name of v.names) seen(name, v.at);
    for (const c of index.secrets()) if (c.projectId === projectId) seen(c.name, c.at);
    if (!saw.size) continue;
    const now = await vault(projectId);
    const held = new Set(now.names);
    for (const [name, at] of [...saw].sort(([x], [y]) => (x < y ? -1 : 1))) {
      if (held.has(name)) continue;
      const record = now.removals.get(name) ?? null;
      const removedAt = secretRemovedAt(keys, projectId, name, record);
      if (removedAt !== null && removedAt >= at) continue;
      const why = record === null ? 'no removal recorded' : removedAt === null ? "a removal record that is not the engine's for it" : `a removal signed ${removedAt}, before that checkpoint`;
      out.push({
        projectId,
        name,
        problem: `a checkpoint taken ${at} saw vault secret ${name}, but it is gone now without its owner's signed removal (${why}): deleted behind the engine's back (calls that need it fail with SECRET_MISSING)`,
      });
    }
  }
  return out;
}

/** Append a signed head for every run of every project to `file`; returns how many were written and which heads were not genuine. */
export async function writeCheckpoints(
  db: Pool,
  chain: ChainKey,
  keys: ChainKeys,
  projects: Array<{ id: string }>,
  file: string,
  at = new Date(),
  secretTimes?: SecretTimes,
): Promise<{ written: number; refused: Array<{ runId: string; reason: string }> }> {
  let written = 0;
  const refused: Array<{ runId: string; reason: string }> = [];
  // the schema's seal, when genuine and signed with its time: an earlier one written back is then older than this
  const { seal } = await latestSeal(db, keys);
  if (seal?.timeSigned) {
    const fields = { sealedAt: seal.sealedAt, at: at.toISOString() };
    const line: SealCheckpoint = { kind: 'seal', ...fields, sig: signLine(chain, sealCheckpointText(fields)) };
    appendFileSync(file, JSON.stringify(line) + '\n', { mode: 0o600 });
  }
  for (const p of projects) {
    const rows = await inProject(db, p.id, async (c) =>
      (await c.query('SELECT id, last_seq, head_hash, head_mac FROM runs WHERE project_id = $1 ORDER BY created_at', [p.id])).rows,
    );
    let chunk = '';
    // each workflow's latest version, as published: signed by the engine, so only a genuine one is remembered
    const versions = await inProject(db, p.id, async (c) =>
      (
        await c.query(
          'SELECT DISTINCT ON (workflow_id) workflow_id, version, definition_hash, definition_mac FROM workflow_versions WHERE project_id = $1 ORDER BY workflow_id, version DESC',
          [p.id],
        )
      ).rows,
    );
    // the project's leave to call private addresses, as its signature says (an unsigned flag grants nothing)
    const grant = await inProject(db, p.id, async (c) =>
      (await c.query('SELECT allow_private_targets, allow_private_targets_mac FROM projects WHERE id = $1', [p.id])).rows[0],
    );
    if (grant) {
      const g = grant.allow_private_targets ? privateTargetsGrant(keys, p.id, grant.allow_private_targets_mac) : { granted: false, grantedAt: null };
      const fields = { projectId: p.id, allowed: g.granted, grantedAt: g.grantedAt, at: at.toISOString() };
      const line: GrantCheckpoint = { kind: 'grant', ...fields, sig: signLine(chain, grantCheckpointText(fields)) };
      chunk += JSON.stringify(line) + '\n';
    }
    // when each vault secret's value was sealed (a value that does not open, or carries no time, is not remembered)
    const times = secretTimes ? await secretTimes(p.id) : null;
    if (times) {
      const fields = { projectId: p.id, names: times.map((t) => t.name).sort(), at: at.toISOString() };
      const line: VaultCheckpoint = { kind: 'vault', ...fields, sig: signLine(chain, vaultCheckpointText(fields)) };
      chunk += JSON.stringify(line) + '\n';
    }
    for (const t of times ?? []) {
      if (t.sealedAt === null || t.sealedAt === 'unreadable') continue;
      const fields = { projectId: p.id, name: t.name, sealedAt: t.sealedAt, at: at.toISOString() };
      const line: SecretCheckpoint = { kind: 'secret', ...fields, sig: signLine(chain, secretCheckpointText(fields)) };
      chunk += JSON.stringify(line) + '\n';
    }
    for (const v of versions) {
      const identity: VersionIdentity = { projectId: p.id, workflowId: v.workflow_id, version: v.version, definitionHash: v.definition_hash };
      const forged = checkVersionSignature(keys, identity, v.definition_mac);
      if (forged) {
        refused.push({ runId: `version ${v.version} of workflow ${v.workflow_id}`, reason: forged });
        continue;
      }
      const line: VersionCheckpoint = { kind: 'version', ...identity, at: at.toISOString(), sig: signVersion(chain, identity) };
      chunk += JSON.stringify(line) + '\n';
    }
    for (const r of rows) {
      if (!r.head_hash) continue;
      const head: RunHead = { projectId: p.id, runId: r.id, seq: r.last_seq, hash: r.head_hash };
      // a head that is not genuine is reported, never made genuine by signing it again
      const forged = checkHeadSignature(keys, head, r.head_mac);
      if (forged) {
        refused.push({ runId: r.id, reason: forged });
        continue;
      }
      chunk += checkpointLine(chain, head, at);
      written++;
    }
    if (chunk) appendFileSync(file, chunk, { mode: 0o600 });
  }
  return { written, refused };
}

/** no line of a checkpoint file comes near this: a longer one is damage, and is not held in memory */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * Each line of a file, as `split('\n')` gives them (the last one empty when the file ends with a newline), read a
 * megabyte at a time; a line over MAX_LINE_BYTES is given as null. Not one string of the whole file: a journal
 * grows by a line per committed batch and is read at every start of the process that writes it, and a string
 * stops at 512 MiB (V8's longest), past which the engine could not start again. Returns how many lines there are.
 */
function eachLine(file: string, fn: (line: string | null, i: number) => void): number {
  const fd = openSync(file, 'r');
  try {
    const chunk = Buffer.alloc(1024 * 1024);
    let carry: Buffer[] = [];
    let carried = 0;
    let i = 0;
    for (let n = readSync(fd, chunk, 0, chunk.length, null); n > 0; n = readSync(fd, chunk, 0, chunk.length, null)) {
      const read = chunk.subarray(0, n);
      let start = 0;
      for (let nl = read.indexOf(10, start); nl !== -1; nl = read.indexOf(10, start)) {
        const piece = read.subarray(start, nl);
        const long = carried + piece.length > MAX_LINE_BYTES;
        fn(long ? null : carried ? Buffer.concat([...carry, piece]).toString('utf8') : piece.toString('utf8'), i++);
        carry = [];
        carried = 0;
        start = nl + 1;
      }
      const rest = read.subarray(start);
      if (carried + rest.length > MAX_LINE_BYTES) carry = [];
      else carry.push(Buffer.from(rest));
      carried += rest.length;
    }
    fn(carried > MAX_LINE_BYTES ? null : Buffer.concat(carry).toString('utf8'), i++);
    return i;
  } finally {
    closeSync(fd);
  }
}

/** A journal of every head a worker (or an operator's command) committed, appended in order; a worker does not wait on the disk. */
/**
 * The heads a process holds its runs to: the files it was given (MESHHOOK_CHECKPOINTS) and the journal it writes
 * itself (MESHHOOK_HEAD_JOURNAL). Restarted on its own journal, an engine refuses a run put back behind a head it
 * committed before the restart instead of carrying it on, without anyone having to list that journal a second
 * time. A journal not written yet adds nothing.
 */
export function holdingOwnJournal(given: CheckpointIndex | null | undefined, journal: string | undefined, keys: ChainKeys): CheckpointIndex | null {
  if (!journal || !existsSync(journal)) return given ?? null;
  const index = given ?? new CheckpointIndex();
  if (!index.files.has(path.resolve(journal))) index.add(journal, keys);
  return index;
}

export class HeadJournal {
  private tail: Promise<void> = Promise.resolve();
  constructor(
    readonly file: string,
    private readonly chain: ChainKey,
  ) {}

  record(head: RunHead, at: Date): void {
    void this.write(head, at).catch(() => undefined);
  }

  /** The same, for a caller that waits until the line is written and hears if it could not be. */
  write(head: RunHead, at: Date): Promise<void> {
    const line = checkpointLine(this.chain, head, at);
    const written = this.tail.then(() => appendFile(this.file, line, { mode: 0o600 }));
    this.tail = written.catch(() => undefined);
    return written;
  }

  flush(): Promise<void> {
    return this.tail;
  }
}
