import { z } from 'zod';

/*
 * The schema of a workflow definition (zod). Apart from definition.ts so that
 * a worker, which only runs definitions already published, never loads zod:
 * it is a third of a worker's start-up.
 */

// a run's outputs and attempts are kept by step id in plain objects, where "constructor" (the one such name that is a
// slug) is found before the step has run: its first attempt was recorded as "function Object() { [native code] }1"
const stepId = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'step ids are lower-case letters, digits, - and _')
  .refine((id) => !(id in Object.prototype), '"constructor" cannot be a step id: it is the name of a property every JavaScript object has');
const jmes = z.string().min(1);

const transformStep = z.object({
  id: stepId,
  type: z.literal('transform'),
  /** JMESPath over the run context: { input, steps: { <id>: output } } */
  expression: jmes,
  next: stepId.optional(),
});

/**
 * The longest a run may be told to wait (a delay step, a retry's delay): a time far enough ahead is not a date at all,
 * and a retry policy of 9,007,199,254,740,991 ms passed this check and left its run stuck, its worker failing with
 * "Invalid time value" for ever.
 */
const MAX_WAIT_MS = 366 * 24 * 3600 * 1000;

export const retryPolicySchema = z.object({
  maxAttempts: z.number().int().min(1).max(100).default(3),
  initialDelayMs: z.number().int().min(0).max(MAX_WAIT_MS).default(500),
  multiplier: z.number().min(1).max(10).default(2),
  maxDelayMs: z.number().int().min(0).max(MAX_WAIT_MS).default(60_000),
  /** 0 = no jitter; 0.2 = ±20 % around the exponential delay */
  jitter: z.number().min(0).max(1).default(0.2),
});
export type RetryPolicy = z.infer<typeof retryPolicySchema>;

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$/;
/**
 * Headers that say how the request is framed or how the connection is used: node sends the recorded body whatever
 * they say, so `Content-Length: 0` with a body sent an empty request and the body as the start of another one on the
 * same connection, while the run log recorded one request with that body. The engine sets them itself.
 */
const FRAMING_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect', 'proxy-connection', 'http2-settings']);
// what node's HTTP client sends (a tab, printable Latin-1): it refuses anything else by throwing, and a published value
// with a "€" in it left every run of the workflow running for ever, its worker failing at each try
const headerText = z
  .string()
  .max(4096)
  .refine((v) => !/[\u0000\r\n]/.test(v), 'header values may not contain line breaks or NUL')
  .refine((v) => !/[^\t\u0020-\u007e\u0080-\u00ff\u0000\r\n]/.test(v), 'header values are Latin-1 text without control characters (HTTP carries nothing else)');
/** a literal value, or a secret of the project's vault by name (the value is never written into the run log) */
const headerValue = z.union([
  headerText,
  z.object({ secret: z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'secret names are lower-case letters, digits, - and _'), prefix: headerText.optional() }).strict(),
]);

export const httpCallStep = z.object({
  id: stepId,
  type: z.literal('http_call'),
  method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
  url: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//i.test(u), 'only http and https URLs can be called')
    // a password in the URL is recorded with it in every request event, and so in run views, live logs and reports
    // (node sends it as Basic authorization): a secret goes in the vault and is named from a header
    .refine((u) => !/^https?:\/\//i.test(u) || (() => { try { const p = new URL(u); return p.username === '' && p.password === ''; } catch { return true; } })(), 'a URL may not carry a user or password (it would be recorded in every request event): name a vault secret in an Authorization header'),
  // keys checked here rather than by a key schema: zod reports a record's bad key as "Invalid key in record",
  // without the rule it broke
  headers: z
    .record(z.string(), headerValue)
    .superRefine((headers, ctx) => {
      for (const name of Object.keys(headers)) {
        if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: "header names are HTTP tokens of 1 to 100 characters (letters, digits and !#$%&'*+.^_`|~-)" });
        else if (FRAMING_HEADERS.has(name.toLowerCase()))
          ctx.addIssue({ code: 'custom', path: [name], message: `${name} is set by the engine: it would frame the request otherwise than the body recorded (a Content-Length of 0 sent the body as the start of a second request)` });
      }
    })
    .default({}),
  /** JMESPath over the run context giving the JSON body; omitted = no body */
  body: jmes.optional(),
  timeoutMs: z.number().int().min(1).max(600_000).default(10_000),
  retry: retryPolicySchema.default({ maxAttempts: 3, initialDelayMs: 500, multiplier: 2, maxDelayMs: 60_000, jitter: 0.2 }),
  next: stepId.optional(),
});

const branchStep = z.object({
  id: stepId,
  type: z.literal('branch'),
  /** JMESPath; a truthy result (JMESPath truthiness) takes `then` */
  condition: jmes,
  then: stepId,
  else: stepId,
});

const delayStep = z.object({
  id: stepId,
  type: z.literal('delay'),
  durationMs: z.number().int().min(0).max(MAX_WAIT_MS),
  next: stepId.optional(),
});

const terminateStep = z.object({
  id: stepId,
  type: z.literal('terminate'),
  status: z.enum(['succeeded', 'failed']),
  reason: z.string().max(500).optional(),
  /** JMESPath giving the run's output */
  output: jmes.optional(),
});

export const stepSchema = z.discriminatedUnion('type', [transformStep, httpCallStep, branchStep, delayStep, terminateStep]);

export const definitionSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]{0,62}$/, 'workflow names are lower-case slugs'),
  description: z.string().max(2000).optional(),
  /** first step; defaults to the first in the list */
  start: stepId.optional(),
  steps: z.array(stepSchema).min(1).max(200),
  /**
   * The most a run may take, in milliseconds: a run not finished this long after it started (or after an operator
   * last sent it back to work) fails at its deadline, whatever it waits for (runs of semantics 5 and later).
   */
  timeoutMs: z.number().int().min(100).max(30 * 24 * 60 * 60 * 1000).optional(),
  /**
   * Start a run at every tick of this cron pattern, in UTC (5 fields, or 6 with seconds first), besides the
   * webhooks: `meshhook up` starts each tick's run once, however many are running (src/intake/scheduler.ts).
   */
  schedule: z
    .string()
    .max(120)
    .superRefine((pattern, ctx) => {
      const problem = cronProblem(pattern);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
});

/** Why a schedule's cron pattern cannot be used, or null. */
function cronProblem(pattern: string): string | null {
  const fields = pattern.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) return `a schedule is a cron pattern of 5 fields (minute hour day month weekday), or 6 with seconds first; "${pattern.slice(0, 60)}" has ${fields}`;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Cron } = require('croner') as typeof import('croner');
    if (!new Cron(pattern, { timezone: 'UTC', paused: true }).nextRun()) return `the schedule "${pattern}" never comes due`;
  } catch (e) {
    return `the schedule "${pattern.slice(0, 60)}" is not a cron pattern: ${(e as Error).message}`;
  }
  return null;
}
