import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Pool, type PoolClient } from 'pg';
import { runCli } from '../../src/cli/main';
import { startIntake } from '../../src/intake/server';
import { deliver } from '../../src/intake/sign';
import { openPool } from '../../src/db/pool';
import { PostgresServer, provisionPostgres } from '../../src/db/postgres';
import { inProject } from '../../src/db/scope';
import { findProject, publishWorkflow, setAllowPrivateTargets } from '../../src/store/registry';
import { Keyring } from '../../src/security/keyring';
import { createMigratedTemplate } from '../../support/template-database';

/*
 * One Postgres server per test file; a migrated template database; a fresh
 * database per test cloned from it (CREATE DATABASE … TEMPLATE is fast).
 */

export interface TestDatabases {
  server: PostgresServer;
  /** a new, migrated, empty database; its pool is closed by closeAll() */
  fresh(): Promise<{ url: string; pool: Pool }>;
  closeAll(): Promise<void>;
}

let counter = 0;

export async function startDatabases(): Promise<TestDatabases> {
  const server = await provisionPostgres();
  const template = `mh_tpl_${process.pid}`;
  const admin = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const c = new Client({ connectionString: server.urlFor('postgres') });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  await createMigratedTemplate(server, template, KEYS.chainKey());
  const pools: Pool[] = [];
  const created: string[] = [];
  return {
    server,
    async fresh() {
      const name = `mh_t_${process.pid}_${++counter}`;
      await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${template}`));
      created.push(name);
      const url = server.urlFor(name);
      const pool = openPool(url, { max: 10 }, () => undefined);
      pools.push(pool);
      return { url, pool };
    },
    async closeAll() {
      await Promise.allSettled(pools.map((p) => p.end()));
      if (server.kind === 'external') {
        // leave a shared server as we found it
        await admin(async (c) => {
          for (const name of [...created, template]) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        }).catch(() => undefined);
      }
      await server.stop();
    },
  };
}

export async function count(pool: Pool, table: string): Promise<number> {
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table}`);
  return rows[0].n;
}

/** Row counts of every table the intake could write to. */
export async function snapshot(pool: Pool): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of ['projects', 'workflows', 'workflow_versions', 'runs', 'run_events', 'deliveries', 'project_secrets']) out[t] = await count(pool, t);
  return out;
}

export interface SeenRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

/** A local order service: records every request; answers with `respond` (201 by default). */
export async function startTarget(
  respond: (req: SeenRequest, n: number) => { status: number; body: unknown } = (_r, n) => ({ status: 201, body: { orderId: `ord_${n}` } }),
): Promise<{ url: string; requests: SeenRequest[]; close(): Promise<void> }> {
  const requests: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : null;
      } catch {
        /* keep the text */
      }
      const seen = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body };
      requests.push(seen);
      const answer = respond(seen, requests.length);
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function orderSyncDefinition(targetUrl: string, name = 'order-sync'): Record<string, unknown> {
  return {
    name,
    steps: [
      { id: 'map', type: 'transform', expression: '{id: input.order.id, total: input.order.sum}', next: 'push' },
      {
        id: 'push',
        type: 'http_call',
        method: 'POST',
        url: `${targetUrl}/orders`,
        body: 'steps.map',
        retry: { maxAttempts: 3, initialDelayMs: 50, multiplier: 2, maxDelayMs: 500, jitter: 0.2 },
        next: 'check',
      },
      { id: 'check', type: 'branch', condition: 'steps.push.status == `201`', then: 'done', else: 'failed' },
      { id: 'done', type: 'terminate', status: 'succeeded', output: 'steps.push.body' },
      { id: 'failed', type: 'terminate', status: 'failed' },
    ],
  };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A run's status, read as the engine would: acting for the project (acme unless told). */
export async function runStatus(pool: Pool, runId: string, project = 'acme'): Promise<string | null> {
  const id = await projectId(pool, project);
  const { rows } = await inProject(pool, id, (c) => c.query('SELECT status FROM runs WHERE id = $1', [runId]));
  return rows[0]?.status ?? null;
}

/** Change published versions as someone with DBA rights would: switch the immutability trigger off around the statement. */
export async function tamperWithVersions(pool: Pool, sql: string, params: unknown[] = []): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('ALTER TABLE workflow_versions DISABLE TRIGGER workflow_versions_immutable');
    await client.query(sql, params);
  } finally {
    await client.query('ALTER TABLE workflow_versions ENABLE TRIGGER workflow_versions_immutable').catch(() => undefined);
    client.release();
  }
}


/** The id of a project by slug (the engine's calls act for one project and take its id). */
export async function projectId(pool: Pool, slug = 'acme'): Promise<string> {
  const p = await findProject(pool, slug, KEYS.chainKeys());
  if (!p) throw new Error(`no project ${slug}`);
  return p.id;
}

/** The engine's keys in these tests (MESHHOOK_KEYS for worker processes: KEYS.toEnv()). */
export const KEYS = Keyring.generate('test');

/** Publish as the CLI does, and let the project call the tests' loopback services. */
export async function publish(pool: Pool, project: string, definition: Record<string, unknown>) {
  const published = await publishWorkflow(pool, KEYS, project, definition);
  await setAllowPrivateTargets(pool, KEYS.chainKey(), published.projectId, true);
  return published;
}

/** The CLI run in this process, its output captured: exit code, stdout and stderr as text. */
export async function cli(argv: string[], env: NodeJS.ProcessEnv, cwd: string = os.tmpdir()): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l), env, cwd });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const made: string[] = [];
process.once('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the OS's temporary one, removed when the test process exits, however its tests ended. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Whether a new session is let through `sql` (in a transaction rolled back): what a tampered catalog still allows. */
export async function letThrough(url: string, sql: string): Promise<boolean> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query(sql);
    return true;
  } catch {
    return false;
  } finally {
    await c.query('ROLLBACK').catch(() => undefined);
    await c.end();
  }
}

/**
 * A fresh database holding one order delivered through an intake (no worker takes it), on which `verify --all`
 * passes: the control a superuser test tampers from. `env` runs the CLI against it.
 */
export async function oneOrderVerified(dbs: TestDatabases): Promise<{ url: string; pool: Pool; env: NodeJS.ProcessEnv }> {
  const { url, pool } = await dbs.fresh();
  const env = { DATABASE_URL: url, MESHHOOK_KEYS: KEYS.toEnv() };
  const wf = await publish(pool, 'acme', orderSyncDefinition('http://127.0.0.1:9'));
  const intake = await startIntake({ pool, keyring: KEYS });
  try {
    const sent = await deliver(intake.url, 'acme', 'order-sync', wf.signingSecret, JSON.stringify({ order: { id: 'o-1', sum: 42 } }), { deliveryId: 'evt_1' });
    if (sent.status !== 202) throw new Error(`the control order was answered ${sent.status}`);
  } finally {
    await intake.close();
  }
  const control = await cli(['verify', '--all'], env);
  if (control.code !== 0) throw new Error(`the control: verify --all exited ${control.code}: ${control.out}${control.err}`);
  return { url, pool, env };
}

/** Change the database as a superuser would behind the engine's back: with its triggers and foreign keys out of the way. */
export async function behindTheEnginesBack(pool: Pool, change: (c: PoolClient) => Promise<unknown>): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query('SET session_replication_role = replica');
    await change(c);
  } finally {
    await c.query('RESET session_replication_role').catch(() => undefined);
    c.release();
  }
}
