import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import { ChainKey, signSecretRemoved } from '../domain/hash-chain';
import { Keyring } from '../security/keyring';
import { MIN_SECRET_LENGTH, SecretValue } from '../security/redact';
import { open, openTimed, seal, sealedUntimed, sealedWith, secretAad, signingAad } from '../security/vault';

/*
 * A vault per project: values sealed with the keyring (the database holds
 * only ciphertext), referenced from http_call steps by name
 * (`headers: { Authorization: { secret: "orders-token", prefix: "Bearer " } }`)
 * and opened by the worker only when it sends the request.
 */

export const SECRET_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
export const MAX_SECRET_BYTES = 8192;

export class SecretValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretValueError';
  }
}

export async function putSecret(db: Pool, keyring: Keyring, projectId: string, name: string, value: string): Promise<'created' | 'replaced'> {
  if (!SECRET_NAME.test(name)) throw new SecretValueError(`secret names are lower-case letters, digits, - and _ (1-63), not "${name.slice(0, 70)}"`);
  if (value.length < MIN_SECRET_LENGTH) throw new SecretValueError(`a secret value has at least ${MIN_SECRET_LENGTH} characters (shorter ones cannot be redacted reliably)`);
  if (Buffer.byteLength(value) > MAX_SECRET_BYTES) throw new SecretValueError(`a secret value has at most ${MAX_SECRET_BYTES} bytes`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new SecretValueError('a secret value may not contain control characters (it is sent in HTTP headers)');
  // node sends a header value as Latin-1 and refuses anything beyond it: such a secret could never be sent
  if (/[^\u0000-\u00ff]/.test(value)) throw new SecretValueError('a secret value may hold Latin-1 characters only (it is sent in HTTP headers, which carry nothing else): encode it, as base64 say');
  return inProject(db, projectId, async (c) => {
    const before = (await c.query('SELECT sealed FROM project_secrets WHERE project_id = $1 AND name = $2', [projectId, name])).rows[0]?.sealed as string | undefined;
    const sealed = seal(keyring, value, secretAad(projectId, name), after(keyring, before, secretAad(projectId, name)));
    const r = await c.query(
      `INSERT INTO project_secrets (project_id, name, sealed) VALUES ($1, $2, $3)
       ON CONFLICT (project_id, name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()
       RETURNING (xmax <> 0) AS replaced`,
      [projectId, name, sealed],
    );
    // set again: a removal recorded before no longer stands for it
    await c.query('DELETE FROM project_secret_removals WHERE project_id = $1 AND name = $2', [projectId, name]);
    return r.rows[0].replaced ? 'replaced' : 'created';
  });
}

export async function listSecrets(db: Pool, projectId: string): Promise<Array<{ name: string; keyId: string | null; updatedAt: string }>> {
  const rows = await inProject(db, projectId, async (c) => (await c.query('SELECT name, sealed, updated_at FROM project_secrets WHERE project_id = $1 ORDER BY name', [projectId])).rows);
  return rows.map((r) => ({ name: r.name, keyId: sealedWith(r.sealed), updatedAt: r.updated_at.toISOString() }));
}

/**
 * Remove a secret, and record the removal signed with the chain key (project_secret_removals): a secret deleted
 * behind the engine's back leaves no genuine removal, so verify --checkpoints names it gone. The removal is
 * recorded even when there is no such secret (any more): that is how the owner says a secret removed before
 * removals were signed, or found gone, went by their word. Returns whether a secret was there.
 */
export async function deleteSecret(db: Pool, chain: ChainKey, projectId: string, name: string): Promise<boolean> {
  return inProject(db, projectId, async (c) => {
    const gone = ((await c.query('DELETE FROM project_secrets WHERE project_id = $1 AND name = $2', [projectId, name])).rowCount ?? 0) > 0;
    // a name no secret can have is never recorded (the table refuses it as project_secrets does)
    if (SECRET_NAME.test(name)) {
      await c.query(
        `INSERT INTO project_secret_removals (project_id, name, removal) VALUES ($1, $2, $3)
         ON CONFLICT (project_id, name) DO UPDATE SET removal = EXCLUDED.removal`,
        [projectId, name, signSecretRemoved(chain, projectId, name, new Date().toISOString())],
      );
    }
    return gone;
  });
}

/**
 * A project's vault as verify compares it with checkpoints: the names of its secrets (not opened) and each removal
 * recorded (`removed:<kid>:<at>:<mac>`, as stored: check it with secretRemovedAt), read in one transaction, so a
 * secret set or removed meanwhile is seen with its removal record as they were together.
 */
export async function vaultNames(db: Pool, projectId: string): Promise<{ names: string[]; removals: Map<string, string> }> {
  return inProject(db, projectId, async (c) => {
    const names = (await c.query('SELECT name FROM project_secrets WHERE project_id = $1 ORDER BY name', [projectId])).rows.map((r) => r.name as string);
    const removals = (await c.query('SELECT name, removal FROM project_secret_removals WHERE project_id = $1', [projectId])).rows;
    return { names, removals: new Map(removals.map((r) => [r.name as string, r.removal as string])) };
  }, { snapshot: true });
}

/** Every secret value of a project, opened (for the worker, at send time). */
export async function loadSecretValues(db: Pool, keyring: Keyring, projectId: string): Promise<SecretValue[]> {
  const rows = await inProject(db, projectId, async (c) => (await c.query('SELECT name, sealed FROM project_secrets WHERE project_id = $1', [projectId])).rows);
  // a name held twice is not the engine's doing (its key refuses it): its key's uniqueness was switched off for a moment
  // and an earlier value written back beside the current one. Which of them a call would send is the order the rows
  // come in, so none is sent
  const names = rows.map((r) => r.name as string);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new Error(`the vault of project ${projectId} holds secret "${twice}" more than once (written behind the engine's back): no value of it is used`);
  return rows.map((r) => ({ name: r.name, value: open(keyring, r.sealed, secretAad(projectId, r.name)) }));
}

/** What `keys rotate` did, and the signing secrets it would not take. */
export interface ResealReport {
  resealed: number;
  /** `project/workflow`s with a plain-text signing secret beside the sealed one: never read, left for the owner to see */
  plainBesideSealed: string[];
  /** `project/workflow`s with only a plain-text signing secret: sealed only when the owner asks (adoptPlain) */
  plainOnly: string[];
}

/**
 * Re-seal every secret and signing secret of every project under the active
 * key (after a new key was put first). A signing secret in plain text is
 * never taken silently: the engine writes none since secrets are sealed, so
 * one may have been written by someone with the database, to make the engine
 * accept webhooks signed with a secret of their choosing. Beside a sealed
 * secret it is ignored and reported; alone, it is sealed only with
 * `adoptPlain` (an engine from before sealed secrets left it).
 */
export async function resealAll(db: Pool, keyring: Keyring, projects: Array<{ id: string; slug?: string }>, opts: { adoptPlain?: boolean } = {}): Promise<ResealReport> {
  const report: ResealReport = { resealed: 0, plainBesideSealed: [], plainOnly: [] };
  for (const p of projects) {
    report.resealed += await inProject(db, p.id, async (c) => {
      let changed = 0;
      for (const r of (await c.query('SELECT name, sealed FROM project_secrets WHERE project_id = $1', [p.id])).rows) {
        if (sealedWith(r.sealed) === keyring.activeId && !sealedUntimed(r.sealed)) continue;
        // the same value under the new key keeps the time it was sealed: a fresh time would make an earlier value
        // written back behind the engine's back (a revoked key) look newer than what a checkpoint saw. A value from
        // before values carried their time is given the earliest one, never a time that passes such a checkpoint
        const { value, sealedAt } = openTimed(keyring, r.sealed, secretAad(p.id, r.name));
        const resealed = seal(keyring, value, secretAad(p.id, r.name), sealedAt ? new Date(sealedAt) : new Date(0));
        await c.query('UPDATE project_secrets SET sealed = $3, updated_at = now() WHERE project_id = $1 AND name = $2', [p.id, r.name, resealed]);
        changed++;
      }
      for (const w of (await c.query('SELECT id, slug, signing_secret, signing_secret_sealed FROM workflows WHERE project_id = $1', [p.id])).rows) {
        const name = `${p.slug ?? p.id}/${w.slug}`;
        if (w.signing_secret_sealed) {
          if (w.signing_secret !== null) report.plainBesideSealed.push(name);
          if (sealedWith(w.signing_secret_sealed) === keyring.activeId && !sealedUntimed(w.signing_secret_sealed)) continue;
          const value = open(keyring, w.signing_secret_sealed, signingAad(p.id, w.id));
          await c.query('UPDATE workflows SET signing_secret_sealed = $3 WHERE project_id = $1 AND id = $2', [p.id, w.id, seal(keyring, value, signingAad(p.id, w.id))]);
          changed++;
        } else if (opts.adoptPlain) {
          await c.query('UPDATE workflows SET signing_secret_sealed = $3, signing_secret = NULL WHERE project_id = $1 AND id = $2', [p.id, w.id, seal(keyring, w.signing_secret, signingAad(p.id, w.id))]);
          changed++;
        } else {
          report.plainOnly.push(name);
        }
      }
      return changed;
    });
  }
  return report;
}

/**
 * When a new value is sealed: now, or just after the value it replaces if that says later (a host whose
 * clock is behind must not make a new value look older than the one a checkpoint saw).
 */
function after(keyring: Keyring, replaced: string | undefined, aad: string): Date {
  const now = new Date();
  if (!replaced) return now;
  try {
    const was = openTimed(keyring, replaced, aad).sealedAt;
    return was && Date.parse(was) >= now.getTime() ? new Date(Date.parse(was) + 1) : now;
  } catch {
    return now;
  }
}

/**
 * When each vault secret of a project was sealed, as its sealed value says (null: sealed before values carried
 * their time; "unreadable": it does not open with this keyring). For checkpoints, and for verify to name a value
 * older than the one a checkpoint saw: an earlier value written back.
 */
export async function secretTimes(db: Pool, keyring: Keyring, projectId: string): Promise<Array<{ name: string; sealedAt: string | null | 'unreadable' }>> {
  const rows = await inProject(db, projectId, async (c) => (await c.query('SELECT name, sealed FROM project_secrets WHERE project_id = $1 ORDER BY name', [projectId])).rows);
  return rows.map((r) => {
    try {
      return { name: r.name, sealedAt: openTimed(keyring, r.sealed, secretAad(projectId, r.name)).sealedAt };
    } catch {
      return { name: r.name, sealedAt: 'unreadable' as const };
    }
  });
}
