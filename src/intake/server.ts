import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { readRunView } from '../replay-service';
import { findProject, findWorkflow, latestVersion, NotFoundError, ProjectRow, TamperedDefinitionError, WorkflowRow } from '../store/registry';
import { DeliveryReusedError, startRun } from '../store/run-store';
import { Clock, systemClock } from '../worker/clock';
import { computeSignature, DELIVERY_HEADER, SIGNATURE_HEADER } from './sign';

/*
 * Webhook intake. Every refusal is a JSON `{ error: { code, message } }` and
 * writes nothing to the database; checks run in this order:
 *   404 unknown_project / unknown_workflow   (before the body is read)
 *   413 payload_too_large, 415 unsupported_media_type   (while reading it)
 *   401 bad_signature, 400 missing_delivery_id, 400 malformed_body
 * Success records the delivery and the run's first event in one transaction:
 * 202 for a new run, 200 (duplicate: true) for a delivery id seen before with
 * the same body, 409 when that id arrives with a different body.
 */

export interface IntakeOptions {
  pool: Pool;
  clock?: Clock;
  /** 0 (default) lets the OS pick a free port */
  port?: number;
  host?: string;
  bodyLimitBytes?: number;
  signatureToleranceSec?: number;
  log?: (entry: Record<string, unknown>) => void;
  onRunStarted?: (runId: string) => void;
}

export interface Intake {
  url: string;
  port: number;
  close(): Promise<void>;
}

export const DEFAULT_BODY_LIMIT = 2 * 1024 * 1024;
export const DEFAULT_SIGNATURE_TOLERANCE_SEC = 300;
/** deeper JSON is refused: it would overflow recursive walkers and Postgres' jsonb parser */
export const MAX_BODY_DEPTH = 64;

const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,200}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Target {
  project: ProjectRow;
  workflow: WorkflowRow;
}

class Refusal extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function refuse(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send({ error: { code, message } });
}

/** Parse `t=<unix>,v1=<hex>[,v1=<hex>…]`; null when the header is not in that shape. */
export function parseSignatureHeader(value: string): { t: number; v1: string[] } | null {
  let t: number | null = null;
  const v1: string[] = [];
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const val = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(val)) t = Number(val);
    else if (key === 'v1' && /^[0-9a-fA-F]{64}$/.test(val)) v1.push(val.toLowerCase());
  }
  return t === null || v1.length === 0 ? null : { t, v1 };
}

/** Check a signature header against the raw body; returns why it fails, or null when it is good. */
export function checkSignature(
  header: string | undefined,
  secret: string,
  rawBody: Buffer,
  now: Date,
  toleranceSec: number,
): string | null {
  if (!header) return 'the MeshHook-Signature header is missing';
  const parsed = parseSignatureHeader(header);
  if (!parsed) return 'the MeshHook-Signature header is not of the form t=<unix seconds>,v1=<hex HMAC-SHA256>';
  const nowSec = Math.floor(now.getTime() / 1000);
  if (Math.abs(nowSec - parsed.t) > toleranceSec) return `the signature timestamp is outside the ${toleranceSec} s tolerance`;
  const expected = Buffer.from(computeSignature(secret, parsed.t, rawBody), 'hex');
  const match = parsed.v1.some((candidate) => {
    const given = Buffer.from(candidate, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  return match ? null : 'the signature does not match the body';
}

/**
 * Parse a webhook body: JSON, an object or an array, storable in jsonb (no NUL,
 * no lone surrogate, bounded nesting). Throws a Refusal explaining what is wrong.
 */
export function parseWebhookBody(raw: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new Refusal(400, 'malformed_body', 'the body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Refusal(400, 'malformed_body', `the body is not valid JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== 'object') {
    throw new Refusal(400, 'malformed_body', 'the body must be a JSON object or array');
  }
  const problem = unstorable(value, 0);
  if (problem) throw new Refusal(400, 'malformed_body', problem);
  return value;
}

function badString(s: string): string | null {
  if (s.includes('\u0000')) return 'the body contains a NUL character (\\u0000), which cannot be stored';
  if (LONE_SURROGATE.test(s)) return 'the body contains an unpaired UTF-16 surrogate, which cannot be stored';
  return null;
}

function unstorable(value: unknown, depth: number): string | null {
  if (typeof value === 'string') return badString(value);
  if (value === null || typeof value !== 'object') return null;
  if (depth >= MAX_BODY_DEPTH) return `the body is nested deeper than ${MAX_BODY_DEPTH} levels`;
  if (Array.isArray(value)) {
    for (const v of value) {
      const p = unstorable(v, depth + 1);
      if (p) return p;
    }
    return null;
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const p = badString(k) ?? unstorable(v, depth + 1);
    if (p) return p;
  }
  return null;
}

function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|57P0[1-3]|08\d{3})$/.test(code) || /Connection terminated|timeout exceeded when trying to connect/i.test((e as Error).message ?? '');
}

export async function startIntake(opts: IntakeOptions): Promise<Intake> {
  const pool = opts.pool;
  const clock = opts.clock ?? systemClock;
  const host = opts.host ?? '127.0.0.1';
  const tolerance = opts.signatureToleranceSec ?? DEFAULT_SIGNATURE_TOLERANCE_SEC;
  const log = opts.log ?? (() => undefined);
  const targets = new WeakMap<FastifyRequest, Target>();

  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT,
    // close(): idle keep-alive sockets are closed at once, requests in flight are answered first
    forceCloseConnections: 'idle',
  });

  // Only JSON is accepted, and as raw bytes: the signature covers the exact body.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  const refused = (req: FastifyRequest, status: number, code: string, extra: Record<string, unknown> = {}): void => {
    log({ level: 'warn', msg: 'request refused', method: req.method, path: req.routeOptions.url ?? req.url.split('?')[0], status, code, ...extra });
  };

  app.setNotFoundHandler((req, reply) => {
    refused(req, 404, 'not_found');
    return refuse(reply, 404, 'not_found', `no route for ${req.method} ${req.url.split('?')[0]}`);
  });

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    const params = req.params as { project?: string; workflow?: string } | undefined;
    const where = { project: params?.project, workflow: params?.workflow };
    if (err instanceof Refusal) {
      refused(req, err.status, err.code, where);
      return refuse(reply, err.status, err.code, err.message);
    }
    if (err instanceof TamperedDefinitionError) {
      log({ level: 'error', msg: 'published version failed its integrity check', ...where, version: err.version });
      return refuse(reply, 503, 'workflow_unavailable', 'the workflow cannot run until it is published again; nothing was recorded');
    }
    if (err instanceof DeliveryReusedError) {
      refused(req, 409, 'delivery_id_reused', { ...where, deliveryId: err.deliveryId });
      return refuse(reply, 409, 'delivery_id_reused', err.message);
    }
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        refused(req, 413, 'payload_too_large', where);
        return refuse(reply, 413, 'payload_too_large', `the body is larger than ${opts.bodyLimitBytes ?? DEFAULT_BODY_LIMIT} bytes`);
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      case 'FST_ERR_CTP_INVALID_TYPE':
        refused(req, 415, 'unsupported_media_type', where);
        return refuse(reply, 415, 'unsupported_media_type', 'webhook bodies must be sent as application/json');
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        refused(req, 400, 'malformed_body', where);
        return refuse(reply, 400, 'malformed_body', 'the body is empty');
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      refused(req, err.statusCode, 'bad_request', where);
      return refuse(reply, err.statusCode, 'bad_request', 'the request could not be read');
    }
    if (isConnectionError(err)) {
      log({ level: 'error', msg: 'database unavailable', error: err.message, ...where });
      return refuse(reply, 503, 'unavailable', 'the database is unavailable; deliver again later');
    }
    log({ level: 'error', msg: 'request failed', error: err.message, ...where });
    return refuse(reply, 500, 'internal', 'the request failed; deliver again later');
  });

  app.get('/healthz', async () => ({ ok: true }));

  app.get<{ Params: { runId: string }; Querystring: { project?: string } }>('/runs/:runId', async (req, reply) => {
    const slug = req.query.project;
    if (!slug) {
      refused(req, 400, 'missing_project');
      return refuse(reply, 400, 'missing_project', 'name the project: /runs/<run id>?project=<slug>');
    }
    const project = await findProject(pool, slug);
    if (!project) {
      refused(req, 404, 'unknown_project');
      return refuse(reply, 404, 'unknown_project', 'no such project');
    }
    const view = UUID.test(req.params.runId) ? await readRunView(pool, project.id, req.params.runId) : null;
    if (!view) {
      refused(req, 404, 'unknown_run');
      return refuse(reply, 404, 'unknown_run', 'no such run in this project');
    }
    return view;
  });

  app.post<{ Params: { project: string; workflow: string }; Body: Buffer | undefined }>(
    '/hooks/:project/:workflow',
    {
      // resolve the target before the body is read: unknown targets get a 404 whatever they send
      onRequest: async (req, reply) => {
        const { project: projectSlug, workflow: workflowSlug } = req.params;
        const project = await findProject(pool, projectSlug);
        if (!project) {
          refused(req, 404, 'unknown_project', { project: projectSlug });
          return refuse(reply, 404, 'unknown_project', 'no such project');
        }
        const workflow = await findWorkflow(pool, projectSlug, workflowSlug);
        if (!workflow || workflow.projectId !== project.id) {
          refused(req, 404, 'unknown_workflow', { project: projectSlug, workflow: workflowSlug });
          return refuse(reply, 404, 'unknown_workflow', 'no such workflow in this project');
        }
        targets.set(req, { project, workflow });
      },
    },
    async (req, reply) => {
      const target = targets.get(req)!;
      const where = { project: target.project.slug, workflow: target.workflow.slug };
      const raw = req.body;
      if (!Buffer.isBuffer(raw)) {
        // no content type at all: nothing was parsed
        refused(req, 415, 'unsupported_media_type', where);
        return refuse(reply, 415, 'unsupported_media_type', 'webhook bodies must be sent as application/json');
      }
      const sigHeader = req.headers[SIGNATURE_HEADER];
      const why = checkSignature(
        typeof sigHeader === 'string' ? sigHeader : undefined,
        target.workflow.signingSecret,
        raw,
        clock.now(),
        tolerance,
      );
      if (why) {
        refused(req, 401, 'bad_signature', { ...where, reason: why });
        return refuse(reply, 401, 'bad_signature', why);
      }
      const deliveryHeader = req.headers[DELIVERY_HEADER];
      const deliveryId = typeof deliveryHeader === 'string' ? deliveryHeader : undefined;
      if (!deliveryId || !DELIVERY_ID.test(deliveryId)) {
        refused(req, 400, 'missing_delivery_id', where);
        return refuse(
          reply,
          400,
          'missing_delivery_id',
          deliveryId ? 'MeshHook-Delivery must be 1 to 200 characters of A-Z a-z 0-9 . _ : -' : 'the MeshHook-Delivery header is missing',
        );
      }
      const input = parseWebhookBody(raw);
      let version;
      try {
        version = await latestVersion(pool, target.project.id, target.workflow.id);
      } catch (e) {
        if (e instanceof NotFoundError) {
          refused(req, 404, 'unknown_workflow', where);
          return refuse(reply, 404, 'unknown_workflow', 'the workflow has no published version');
        }
        throw e;
      }
      const started = await startRun(pool, {
        runId: randomUUID(),
        projectId: target.project.id,
        projectSlug: target.project.slug,
        workflowSlug: target.workflow.slug,
        version,
        deliveryId,
        input,
        rawBody: raw,
        at: clock.now(),
      });
      log({ level: 'info', msg: started.duplicate ? 'delivery repeated' : 'run started', ...where, deliveryId, runId: started.runId, version: version.version });
      if (!started.duplicate) opts.onRunStarted?.(started.runId);
      return reply.code(started.duplicate ? 200 : 202).send({ runId: started.runId, deliveryId, duplicate: started.duplicate });
    },
  );

  await app.listen({ port: opts.port ?? 0, host });
  const port = (app.server.address() as AddressInfo).port;
  let closed: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () => (closed ??= app.close().then(() => undefined)),
  };
}
