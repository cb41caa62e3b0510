import { Given, Then, When } from '@cucumber/cucumber';
import { expect } from 'expect';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { validateDefinition, WorkflowDefinition } from '../src/domain/definition';
import type { RecordedEvent } from '../src/domain/events';
import { verifyLog, VerifyReport } from '../src/domain/replay';
import { FIXTURE_KEYRING } from '../support/fixture-keyring';
import { HISTORIES, RecordedHistory } from '../support/histories';
import type { ReplayWorld } from '../support/world';

/*
 * Golden histories (Temporal-style replay tests): run logs recorded by the
 * engine and checked in under features/fixtures/histories/. Each is replayed
 * against today's decider; no database or outside world is needed, because
 * every outside input is in the log.
 */

Given('the recorded history {string}', async function (this: ReplayWorld, name: string) {
  const file = path.join(HISTORIES, `${name}.json`);
  if (!existsSync(file)) throw new Error(`no recorded history ${file}; record one with "npm run record-histories"`);
  this.history = JSON.parse(readFileSync(file, 'utf8')) as RecordedHistory;
});

When('it is replayed against today\'s engine', async function (this: ReplayWorld) {
  const h = this.history!;
  this.historyReport = verifyLog(h.runId, h.events, validateDefinition(h.definition), { keys: FIXTURE_KEYRING.chainKeys() });
  // the scenario's replay steps read the same report shape as for live runs
  this.verification = { ...this.historyReport, empty: h.events.length === 0, headProblem: null, checkpointProblem: null, viewMatches: true, viewDifference: null, versionProblem: null, unsignedAccepted: false, deliveryProblem: null, bodySha256: null };
  this.lastError = null;
});

Then('it ends {string} as it did when it was recorded', async function (this: ReplayWorld, status: string) {
  const h = this.history!;
  // the last: a run an operator sent back to work after it failed finished twice, and ends as the second says
  const finished = [...h.events].reverse().find((e) => e.type === 'RunFinished');
  expect((finished?.data as { status?: string } | undefined)?.status).toBe(status);
  expect(this.historyReport!.state.status).toBe(status);
});

Then('its hash chain is intact', async function (this: ReplayWorld) {
  expect(this.historyReport!.chainBreak).toBeNull();
});
