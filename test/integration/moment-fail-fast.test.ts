import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

/*
 * The harness, from the outside: a QA engineer's scenario that arms a worker
 * at a moment its run can no longer reach fails in under two seconds, and the
 * failure names the moment and where the run is — instead of a 20-second
 * timeout that says only what it waited for. Runs the real cucumber-js on
 * scenarios written here, against the real engine and Postgres.
 */

const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'node_modules', '@cucumber', 'cucumber', 'bin', 'cucumber.js');

const FEATURE = `Feature: Moments a run can no longer reach

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  Scenario: A crash armed at a retry timer of a call that never retries
    Given the worker will crash when the timer of "push" fires
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds

  Scenario: A stall armed at a retry timer of a call that never retries
    Given the worker will stall when the timer of "push" fires
    When "acme" delivers an order webhook to "order-sync"
    And the database drops the engine's connections
    Then the run succeeds

  Scenario: A crash armed at the request of a step that sends none
    Given the worker will crash before the request of "map" is sent
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds

  Scenario: A crash armed at a step the workflow does not have
    Given the worker will crash after step "ship" is recorded
    Then the run succeeds
`;

interface Failed {
  scenario: string;
  step: string;
  ms: number;
  message: string;
}

function failedSteps(ndjson: string): Failed[] {
  const msgs = ndjson
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const pickles = new Map<string, { name: string; steps: Map<string, string> }>();
  for (const m of msgs) if (m.pickle) pickles.set(m.pickle.id, { name: m.pickle.name, steps: new Map(m.pickle.steps.map((s: { id: string; text: string }) => [s.id, s.text])) });
  const testCases = new Map<string, { pickleId: string; steps: Map<string, string | undefined> }>();
  for (const m of msgs) {
    if (m.testCase) {
      testCases.set(m.testCase.id, { pickleId: m.testCase.pickleId, steps: new Map(m.testCase.testSteps.map((s: { id: string; pickleStepId?: string }) => [s.id, s.pickleStepId])) });
    }
  }
  const started = new Map<string, string>();
  for (const m of msgs) if (m.testCaseStarted) started.set(m.testCaseStarted.id, m.testCaseStarted.testCaseId);
  const out: Failed[] = [];
  for (const m of msgs) {
    const f = m.testStepFinished;
    if (!f || f.testStepResult.status !== 'FAILED') continue;
    const tc = testCases.get(started.get(f.testCaseStartedId)!)!;
    const pickle = pickles.get(tc.pickleId)!;
    const d = f.testStepResult.duration;
    out.push({
      scenario: pickle.name,
      step: pickle.steps.get(tc.steps.get(f.testStepId) ?? '') ?? '(hook)',
      ms: d.seconds * 1000 + d.nanos / 1e6,
      message: f.testStepResult.message ?? '',
    });
  }
  return out;
}

test('a scenario whose moment can no longer happen fails within 2 s, naming the moment and where the run is', { timeout: 240_000 }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'moment-fail-fast-'));
  try {
    const feature = path.join(dir, 'unreachable-moments.feature');
    const messages = path.join(dir, 'messages.ndjson');
    writeFileSync(feature, FEATURE);
    // --force-exit: run in one process (the catalogue profile has no parallel workers), cucumber-js now and then
    // did not exit once its four scenarios had failed (a handle left open by the in-process world: 3 times in about
    // 30 runs, the last on a quiet machine), and the test timed out at 220 s with every assertion below satisfied
    const res = spawnSync(process.execPath, [cli, '-p', 'catalogue', '--force-exit', '--format', `message:${messages}`, feature], { cwd: root, encoding: 'utf8', timeout: 220_000 });
    assert.equal(res.status, 1, `cucumber-js should fail the four scenarios:\n${res.stdout}\n${res.stderr}`);
    const failed = failedSteps(readFileSync(messages, 'utf8'));
    const byScenario = new Map(failed.map((f) => [f.scenario, f]));
    assert.equal(byScenario.size, 4, `each scenario fails once: ${JSON.stringify(failed, null, 2)}`);

    const crash = byScenario.get('A crash armed at a retry timer of a call that never retries')!;
    assert.equal(crash.step, 'a new worker takes over');
    assert.match(crash.message, /was set to crash when the timer of "push" fires, but that can no longer happen/);
    assert.match(crash.message, /finished without reaching it \(the run is succeeded, its log ends .*RunFinished/);
    assert.ok(crash.ms < 2_000, `failed after ${crash.ms} ms`);

    const stall = byScenario.get('A stall armed at a retry timer of a call that never retries')!;
    assert.equal(stall.step, "the database drops the engine's connections");
    assert.match(stall.message, /was set to stall when the timer of "push" fires, but that can no longer happen: run \S+ finished/);
    assert.ok(stall.ms < 2_000, `failed after ${stall.ms} ms`);

    const kind = byScenario.get('A crash armed at the request of a step that sends none')!;
    assert.equal(kind.step, 'the worker will crash before the request of "map" is sent');
    assert.match(kind.message, /step "map" is a transform step, which sends no request/);
    assert.ok(kind.ms < 2_000, `failed after ${kind.ms} ms`);

    const missing = byScenario.get('A crash armed at a step the workflow does not have')!;
    assert.match(missing.message, /no workflow of this scenario has a step "ship": order-sync \(map, push, check, done, rejected\)/);
    assert.ok(missing.ms < 2_000, `failed after ${missing.ms} ms`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
