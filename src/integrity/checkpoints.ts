import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import type { Pool } from 'pg';
import { inProject } from '../db/scope';
import { ChainKey, ChainKeys, checkHeadSignature, checkVersionSignature, RunHead, signHead, signVersion, VersionIdentity } from '../domain/hash-chain';

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
 */

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
export class CheckpointIndex {
  private readonly latest = new Map<string, Checkpoint>();
  private readonly latestVersions = new Map<string, VersionCheckpoint>();
  readonly problems: string[] = [];
  lines = 0;

  static load(files: string[], keys: ChainKeys): CheckpointIndex {
    const index = new CheckpointIndex();
    for (const file of files) {
      if (!existsSync(file)) {
        index.problems.push(`${file}: no such checkpoint file`);
        continue;
      }
      const lines = readFileSync(file, 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (!line.trim()) return;
        index.lines++;
        let cp: Checkpoint;
        try {
          cp = JSON.parse(line) as Checkpoint;
        } catch {
          // the last line of a journal may be cut short by a crash; anything else is damage
          if (i < lines.length - 2) index.problems.push(`${file}:${i + 1}: not a checkpoint line`);
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
    }
    return index;
  }

  /** The furthest head a checkpoint remembers for a run. */
  of(runId: string): Checkpoint | null {
    return this.latest.get(runId) ?? null;
  }

  runs(): Checkpoint[] {
    return [...this.latest.values()];
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

/** Append a signed head for every run of every project to `file`; returns how many were written and which heads were not genuine. */
export async function writeCheckpoints(
  db: Pool,
  chain: ChainKey,
  keys: ChainKeys,
  projects: Array<{ id: string }>,
  file: string,
  at = new Date(),
): Promise<{ written: number; refused: Array<{ runId: string; reason: string }> }> {
  let written = 0;
  const refused: Array<{ runId: string; reason: string }> = [];
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

/** A worker's journal of every head it committed, appended in order without waiting on the disk. */
export class HeadJournal {
  private tail: Promise<void> = Promise.resolve();
  constructor(
    readonly file: string,
    private readonly chain: ChainKey,
  ) {}

  record(head: RunHead, at: Date): void {
    const line = checkpointLine(this.chain, head, at);
    this.tail = this.tail.then(() => appendFile(this.file, line, { mode: 0o600 })).catch(() => undefined);
  }

  flush(): Promise<void> {
    return this.tail;
  }
}
