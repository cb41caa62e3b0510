/*
 * The two bench workflows as DBOS Transact workflows, registered when this
 * module is loaded (DBOS wants its functions registered before launch). Loaded
 * by bench/contenders/dbos.ts (in-process executor) and by dbos-child.ts (one
 * executor per child process).
 *
 *   pure  shape (step) → tax (step)  → terminate
 *   http  shape (step) → push (step: POST JSON with an Idempotency-Key) → terminate
 *   pureInline  shape → tax → terminate computed in the workflow's body, no step (see below)
 *
 * Each step is a `DBOS.runStep`: DBOS checkpoints its output (a row in
 * dbos.operation_outputs, its own transaction) before the workflow goes on,
 * like the engine's one commit per batch. "terminate" is the workflow's
 * return: DBOS records the output and the SUCCESS status in one transaction,
 * which is the engine's RunFinished batch. (A third runStep would add a
 * checkpoint the engine has no counterpart for.)
 */
import { DBOS } from '@dbos-inc/dbos-sdk';
import { evaluate, HTTP_OUTPUT_EXPR, idempotencyKeyFor, OrderInput, postJson, PURE_OUTPUT_EXPR, SHAPE_EXPR, TAX_EXPR } from './common';

export const DBOS_APP_NAME = 'meshhook-bench';
/** fixed, so the workflows enqueued by the trial's DBOSClient are dequeued by every executor */
export const DBOS_APP_VERSION = 'bench-1';
export const DBOS_QUEUE = 'bench';
export const DBOS_WORKFLOW_NAMES = { pure: 'benchPure', http: 'benchHttp', pureInline: 'benchPureInline' } as const;

/** Set by whoever hosts the executor. */
export const executorHooks: { targetUrl: string; onSettled: (ok: boolean) => void } = {
  targetUrl: '',
  onSettled: () => undefined,
};

async function benchPure(input: OrderInput): Promise<unknown> {
  let ok = false;
  try {
    const shape = await DBOS.runStep(async () => evaluate(SHAPE_EXPR, input, {}), { name: 'shape' });
    const tax = await DBOS.runStep(async () => evaluate(TAX_EXPR, input, { shape }), { name: 'tax' });
    const output = evaluate(PURE_OUTPUT_EXPR, input, { shape, tax });
    ok = true;
    return output;
  } finally {
    // the workflow's body is done; DBOS records its outcome right after this
    executorHooks.onSettled(ok);
  }
}

/*
 * The same pure workflow as DBOS's own advice writes it: workflow code is deterministic and
 * re-executed on recovery, and only what is not (I/O, clocks, randomness) goes in a step. Two
 * JMESPath transforms of the input need no checkpoint, so DBOS records the input when the
 * workflow is enqueued and the output when it returns, nothing between. The engine records
 * each transform's output (in one batch with the run's end), so this one does less durable
 * work than the engine: a reference in bench/side-by-side.ts, not the paired headline.
 */
async function benchPureInline(input: OrderInput): Promise<unknown> {
  let ok = false;
  try {
    const shape = evaluate(SHAPE_EXPR, input, {});
    const tax = evaluate(TAX_EXPR, input, { shape });
    const output = evaluate(PURE_OUTPUT_EXPR, input, { shape, tax });
    ok = true;
    return output;
  } finally {
    executorHooks.onSettled(ok);
  }
}

async function benchHttp(input: OrderInput): Promise<unknown> {
  let ok = false;
  try {
    const shape = await DBOS.runStep(async () => evaluate(SHAPE_EXPR, input, {}), { name: 'shape' });
    const workflowId = DBOS.workflowID ?? 'unknown';
    const push = await DBOS.runStep(() => postJson(`${executorHooks.targetUrl}/orders`, shape, idempotencyKeyFor(workflowId, 'push')), { name: 'push' });
    const output = evaluate(HTTP_OUTPUT_EXPR, input, { shape, push });
    ok = true;
    return output;
  } finally {
    executorHooks.onSettled(ok);
  }
}

export const dbosWorkflows = {
  pure: DBOS.registerWorkflow(benchPure, { name: DBOS_WORKFLOW_NAMES.pure }),
  http: DBOS.registerWorkflow(benchHttp, { name: DBOS_WORKFLOW_NAMES.http }),
  pureInline: DBOS.registerWorkflow(benchPureInline, { name: DBOS_WORKFLOW_NAMES.pureInline }),
};

export interface ExecutorConfig {
  databaseUrl: string;
  executorId: string;
  poolSize?: number;
  logLevel?: string;
}

/** DBOS's process-wide configuration for one trial (DBOS is a singleton: one executor per process). */
export function configureDbos(c: ExecutorConfig): void {
  DBOS.setConfig({
    name: DBOS_APP_NAME,
    systemDatabaseUrl: c.databaseUrl,
    systemDatabasePoolSize: c.poolSize,
    applicationVersion: DBOS_APP_VERSION,
    executorID: c.executorId,
    logLevel: c.logLevel ?? 'warn',
    // the trial migrated the schema before the clock; launch only verifies it
    runMigrations: false,
  });
}
