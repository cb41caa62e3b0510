/*
 * Records the golden histories under features/fixtures/histories/: real runs
 * of today's engine (embedded Postgres, a worker, a local order service),
 * saved with the definition they ran on. Re-run only on purpose, when a
 * change to the log format is intended:  npm run record-histories
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { migrate } from '../src/db/migrate';
import { openPool } from '../src/db/pool';
import { provisionPostgres } from '../src/db/postgres';
import type { WorkflowDefinition } from '../src/domain/definition';
import type { RecordedEvent } from '../src/domain/events';
import { eventHash } from '../src/domain/hash-chain';
import { readRunView } from '../src/replay-service';
import { publishWorkflow, setAllowPrivateTargets } from '../src/store/registry';
import { FIXTURE_KEYRING } from '../support/fixture-keyring';

// signed with the fixtures' key, so the suite can check their chains
const KEYS = FIXTURE_KEYRING;
import { startRun } from '../src/store/intake-start';
import { loadEvents } from '../src/store/log-read';
import { ControlledClock } from '../src/worker/clock';
import { Worker } from '../src/worker/worker';
import { TargetService } from '../support/target-service';
import { tableToDefinition, WorkflowRow } from '../support/workflow-table';

const OUT = path.resolve(__dirname, '..', 'features', 'fixtures', 'histories');
const ORDER = { order: { id: 'A-1001', sum: 42.5, currency: 'EUR', customer: { name: 'Ada Lovelace', email: 'ada@example.com' } } };

const rows = (text: string): WorkflowRow[] =>
  text
    .trim()
    .split('\n')
    .map((l) => l.split('|').map((c) => c.trim()))
    .map(([step, type, does, then]) => ({ step, type, does, then }));

const ORDER_SYNC = rows(`
map      | transform | {id: order.id, total: order.sum}     | push
push     | http_call | POST the mapped order to /orders     | check
check    | branch    | when push answered 200               | done, else rejected
done     | terminate | succeeded                            |
rejected | terminate | failed: the order service refused it |`);

async function main(): Promise<void> {
  const pg = await provisionPostgres();
  const pool = openPool(pg.urlFor());
  await migrate(pool);
  const target = new TargetService();
  await target.start();
  const clock = new ControlledClock();
  const worker = new Worker({ pool, lockConnection: { connectionString: pg.urlFor() }, clock, pollMs: 10, keyring: KEYS });
  worker.start();
  mkdirSync(OUT, { recursive: true });

  const record = async (
    name: string,
    description: string,
    def: WorkflowDefinition,
    input: unknown,
    during?: (runId: string, projectId: string) => Promise<void>,
  ): Promise<{ runId: string; definition: WorkflowDefinition; events: RecordedEvent[] }> => {
    const pub = await publishWorkflow(pool, KEYS, 'acme', def);
    await setAllowPrivateTargets(pool, KEYS.chainKey(), pub.projectId, true);
    const runId = randomUUID();
    await startRun(pool, {
      runId,
      projectId: pub.projectId,
      projectSlug: 'acme',
      workflowSlug: def.name,
      version: { workflowId: pub.workflowId, version: pub.version, definition: pub.definition, definitionHash: pub.definitionHash, tampered: null },
      deliveryId: `dlv_${name}`,
      input,
      rawBody: JSON.stringify(input),
      at: clock.now(),
      chain: KEYS.chainKey(),
    });
    worker.poke();
    if (during) await during(runId, pub.projectId);
    for (let i = 0; i < 400; i++) {
      const v = await readRunView(pool, pub.projectId, runId);
      if (v && ['succeeded', 'failed'].includes(v.status)) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const events = await loadEvents(pool, pub.projectId, runId);
    const history = { name, description, recordedWith: 'meshhook-replay 0.1.0', runId, definition: pub.definition, events };
    writeFileSync(path.join(OUT, `${name}.json`), JSON.stringify(history, null, 2) + '\n');
    console.log(`recorded ${name}: ${events.length} events`);
    return history;
  };

  const base = target.baseUrl;
  const sync = await record('order-sync-succeeded', 'An order mapped, pushed to the order service and accepted.', tableToDefinition('order-sync', ORDER_SYNC, base), ORDER);

  target.script('*', { kind: 'fail', status: 503, times: 2 });
  await record('order-sync-retried', 'The order service answered 503 twice; the third attempt was accepted. Jitter draws are in the log.', tableToDefinition('order-sync', ORDER_SYNC, base), ORDER);

  target.script('*', { kind: 'respond', status: 422, body: { error: 'invalid order' }, times: 1 });
  await record('order-sync-refused', 'The order service refused the order with 422; the run failed without retrying.', tableToDefinition('order-sync', ORDER_SYNC, base), ORDER);

  await record(
    'order-review-else-branch',
    'A small order took the else side of the review branch.',
    tableToDefinition(
      'order-review',
      rows(`
map     | transform | {id: order.id, total: order.sum}  | check
check   | branch    | when the total of map is over 100 | review, else approve
review  | terminate | succeeded                         |
approve | terminate | succeeded                         |`),
      base,
    ),
    ORDER,
  );

  await record(
    'order-follow-up-delayed',
    'A run that waited one hour on a durable timer, then called the order service.',
    tableToDefinition(
      'order-follow-up',
      rows(`
wait   | delay     | wait 1 hour                   | remind
remind | http_call | POST the order to /reminders  | done
done   | terminate | succeeded                     |`),
      base,
    ),
    ORDER,
    async (runId, projectId) => {
      for (let i = 0; i < 200; i++) {
        const v = await readRunView(pool, projectId, runId);
        if (v?.status === 'waiting') break;
        await new Promise((r) => setTimeout(r, 25));
      }
      clock.advance(3_600_000);
      worker.poke();
    },
  );

  // Not a recording: order-sync-succeeded with its branch decision rewritten by
  // hand to an older shape ({ taken }) and the chain re-hashed, labelled as such.
  // It stands for a log whose decisions today's engine would not make.
  const old = JSON.parse(JSON.stringify(sync.events)) as RecordedEvent[];
  let prev = old[0].prevHash;
  for (const e of old) {
    const d = e.data as { step?: string; output?: unknown; next?: string };
    if (e.type === 'StepSucceeded' && d.step === 'check') d.output = { taken: d.next };
    e.prevHash = prev;
    e.hash = eventHash(prev, e);
    prev = e.hash;
  }
  writeFileSync(
    path.join(OUT, 'order-sync-edited-branch-output.json'),
    JSON.stringify(
      {
        name: 'order-sync-edited-branch-output',
        description:
          "Not recorded by any engine: order-sync-succeeded with its branch decision rewritten by hand to an older shape ({ taken } instead of { condition, next }) and its chain re-hashed to match. It stands for a log whose recorded decisions today's engine would not make.",
        recordedWith: 'hand-edited by scripts/record-histories.ts from a meshhook-replay 0.1.0 recording',
        runId: sync.runId,
        definition: sync.definition,
        events: old,
      },
      null,
      2,
    ) + '\n',
  );
  console.log('wrote order-sync-edited-branch-output');

  await worker.stop();
  await target.close();
  await pool.end();
  await pg.stop();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
