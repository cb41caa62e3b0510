import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definitionHash, expressionsOf, InvalidDefinitionError, secretsUsedBy, stepOf, successorsOf, validateDefinition } from '../../src/domain/definition';

function problemsOf(raw: unknown): string[] {
  try {
    validateDefinition(raw);
  } catch (e) {
    assert.ok(e instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${(e as Error).name}`);
    return e.problems;
  }
  assert.fail('the definition was accepted');
}

const t = (id: string, next?: string) => ({ id, type: 'transform', expression: 'input', ...(next ? { next } : {}) });
const end = (id: string) => ({ id, type: 'terminate', status: 'succeeded' });

describe('definition validation', () => {
  it('accepts a good definition and defaults start to the first step', () => {
    const def = validateDefinition({ name: 'ok', steps: [t('a', 'b'), end('b')] });
    assert.equal(def.start, 'a');
  });

  it('fills http_call defaults (retry policy, timeout, headers)', () => {
    const def = validateDefinition({ name: 'h', steps: [{ id: 'call', type: 'http_call', method: 'GET', url: 'http://x.test/a' }] });
    const call = def.steps[0];
    assert.equal(call.type, 'http_call');
    if (call.type !== 'http_call') return;
    assert.deepEqual(call.headers, {});
    assert.equal(call.timeoutMs, 10_000);
    assert.equal(call.retry.maxAttempts, 3);
  });

  it('names a duplicate step id', () => {
    assert.deepEqual(problemsOf({ name: 'd', steps: [t('a', 'b'), t('b'), t('b')] }), ['step "b" is defined twice']);
  });

  it('names a next step that does not exist', () => {
    assert.deepEqual(problemsOf({ name: 'm', steps: [t('a', 'ghost')] }), ['step "a" goes to "ghost", which does not exist']);
  });

  it('names the missing targets of a branch and a missing start', () => {
    const problems = problemsOf({ name: 'b', start: 'nope', steps: [{ id: 'a', type: 'branch', condition: 'input', then: 'x', else: 'y' }] });
    assert.deepEqual(problems, ['start step "nope" does not exist', 'step "a" goes to "x", which does not exist', 'step "a" goes to "y", which does not exist']);
  });

  it('shows a cycle as a path', () => {
    assert.deepEqual(problemsOf({ name: 'c', steps: [t('a', 'b'), t('b', 'c'), t('c', 'a')] }), ['steps form a cycle: a -> b -> c -> a']);
  });

  it('names unreachable steps', () => {
    assert.deepEqual(problemsOf({ name: 'u', steps: [t('a'), t('island', 'a')] }), ['step "island" cannot be reached from "a"']);
  });

  it('names a bad JMESPath expression with its step and field', () => {
    const problems = problemsOf({ name: 'j', steps: [{ id: 'a', type: 'transform', expression: 'foo[' }] });
    assert.equal(problems.length, 1);
    assert.match(problems[0], /^step "a" expression is not valid JMESPath: /);
    const branch = problemsOf({ name: 'j', steps: [{ id: 'a', type: 'branch', condition: '==', then: 'a', else: 'a' }] });
    assert.match(branch[0], /^step "a" condition is not valid JMESPath/);
  });

  it('refuses an expression that reads a hyphenated step id as a subtraction, and accepts it quoted', () => {
    const steps = (expr: string) => [
      { id: 'map-invoice', type: 'transform', expression: '{total: input.sum}', next: 'check' },
      { id: 'check', type: 'branch', condition: expr, then: 'done', else: 'done' },
      end('done'),
    ];
    assert.deepEqual(problemsOf({ name: 'h', steps: steps('steps.map-invoice.total > `100`') }), [
      'step "check" condition reads steps.map-invoice as "steps.map minus …"; write steps."map-invoice"',
    ]);
    validateDefinition({ name: 'h', steps: steps('steps."map-invoice".total > `100`') });
    // a step id that merely starts the same way is not that step
    validateDefinition({ name: 'h', steps: steps('steps.map_invoice_total > `100`') });
  });

  it('reports schema errors with their path', () => {
    const problems = problemsOf({ name: 'Bad Name', steps: [{ id: 'a', type: 'http_call', method: 'FETCH', url: 'not a url' }, { id: 'b', type: 'teleport' }] });
    assert.ok(problems.some((p) => p.startsWith('name: workflow names are lower-case slugs')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.0.method:')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.0.url:')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('steps.1.type:')), problems.join('\n'));
  });

  it('names the step and the type of a step whose type is unknown, not only its path', () => {
    const problems = problemsOf({ name: 'odd', steps: [t('map', 'mail'), { id: 'mail', type: 'email', next: 'done' }, { id: 'done', type: 'terminate', status: 'succeeded' }] });
    assert.deepEqual(problems, ['steps.1.type: step "mail" has type "email", which is not a step type (transform, http_call, branch, delay, terminate)']);
    assert.deepEqual(problemsOf({ name: 'odd', steps: [{ id: 'mail' }] }), ['steps.0.type: step "mail" has no type (transform, http_call, branch, delay, terminate)']);
  });

  it('refuses an empty definition and a non-object', () => {
    assert.ok(problemsOf({ name: 'e', steps: [] }).some((p) => p.startsWith('steps:')));
    assert.ok(problemsOf(null).length > 0);
    assert.ok(problemsOf({ name: 'e', steps: [{ id: 'Upper', type: 'transform', expression: 'x' }] }).some((p) => /step ids are lower-case/.test(p)));
  });

  it('the error message lists every problem', () => {
    assert.throws(() => validateDefinition({ name: 'm', steps: [t('a', 'x'), t('a')] }), /invalid workflow definition: step "a" is defined twice; step "a" goes to "x"/);
  });

  it('hashes definitions canonically: key order does not matter', () => {
    const a = validateDefinition({ name: 'k', steps: [{ id: 'a', type: 'transform', expression: 'input' }] });
    const b = validateDefinition({ steps: [{ expression: 'input', type: 'transform', id: 'a' }], name: 'k' });
    assert.equal(definitionHash(a), definitionHash(b));
    assert.notEqual(definitionHash(a), definitionHash(validateDefinition({ name: 'k', steps: [{ id: 'a', type: 'transform', expression: 'input.x' }] })));
  });
});

describe('definition schema edges', () => {
  const call = (extra: Record<string, unknown>) => ({ name: 'h', steps: [{ id: 'call', type: 'http_call', method: 'POST', url: 'https://orders.example.com/v1/orders', ...extra }] });
  const accepted = (raw: unknown) => assert.doesNotThrow(() => validateDefinition(raw));

  it('step ids are whole lower-case slugs of at most 63 characters', () => {
    accepted({ name: 'ids', steps: [t(`a${'b'.repeat(62)}`)] });
    for (const id of ['9lives', 'ship!', `a${'b'.repeat(63)}`, 'Ship']) {
      assert.ok(problemsOf({ name: 'ids', steps: [t(id)] }).some((p) => p === 'steps.0.id: step ids are lower-case letters, digits, - and _'), id);
    }
  });

  it('workflow names are whole lower-case slugs and descriptions at most 2000 characters', () => {
    accepted({ name: 'order-sync', description: 'd'.repeat(2000), steps: [t('a')] });
    assert.deepEqual(problemsOf({ name: 'order-sync!', steps: [t('a')] }), ['name: workflow names are lower-case slugs']);
    assert.ok(problemsOf({ name: 'order-sync', description: 'd'.repeat(2001), steps: [t('a')] }).some((p) => p.startsWith('description:')));
  });

  it('header names are whole HTTP tokens of 1 to 100 characters', () => {
    accepted(call({ headers: { 'X-Api-Key': 'k', ["!#$%&'*+.^_`|~-"]: 'v', ['h'.repeat(100)]: 'v' } }));
    for (const name of ['bad header', 'X-Key:', ':X-Key', 'h'.repeat(101), '']) {
      const problems = problemsOf(call({ headers: { [name]: 'v' } }));
      assert.ok(problems.some((p) => p.includes('header names are HTTP tokens')), `${JSON.stringify(name)}: ${problems.join('; ')}`);
    }
  });

  it('header values are at most 4096 characters with no line break or NUL', () => {
    accepted(call({ headers: { 'X-Note': 'v'.repeat(4096) } }));
    assert.ok(problemsOf(call({ headers: { 'X-Note': 'v'.repeat(4097) } })).length > 0);
    for (const bad of ['a\r\nInjected: 1', 'a\nb', 'a\u0000b']) {
      const problems = problemsOf(call({ headers: { 'X-Note': bad } }));
      assert.ok(problems.some((p) => p.includes('header values may not contain line breaks or NUL')), problems.join('; '));
    }
  });

  it('a step id is not the name of a property every object has (hostile round 7)', () => {
    // "constructor" is a slug, and the decider's maps of a run's outputs and attempts are plain objects: the step's first
    // attempt was recorded as "function Object() { [native code] }1", it was never retried ("gave up after NaN
    // attempts"), and an operator's resume from it was refused as if it had succeeded
    const problems = problemsOf({ name: 'x', steps: [{ id: 'constructor', type: 'http_call', method: 'POST', url: 'https://orders.example.com/v1' }] });
    assert.ok(problems.some((p) => p.includes('"constructor" cannot be a step id')), problems.join('; '));
    accepted({ name: 'x', steps: [{ id: 'constructors', type: 'transform', expression: 'input' }] });
  });

  it('a URL carries no user or password, which every request event would record (hostile round 7)', () => {
    for (const url of ['https://svc:hunter2hunter2@orders.example.com/v1', 'https://token@orders.example.com/v1', 'http://:pw@orders.example.com/']) {
      const problems = problemsOf(call({ url }));
      assert.ok(problems.some((p) => p.includes('may not carry a user or password')), `${url}: ${problems.join('; ')}`);
    }
    accepted(call({ url: 'https://orders.example.com/v1?user=a@b' }));
  });

  it('header values are what node can send: a tab and printable Latin-1, nothing beyond (hostile round 7)', () => {
    accepted(call({ headers: { 'X-Note': 'tab\there, caf\u00e9 \u00ff ~' }, }));
    // node's client throws on each of these at send time: published, every run of the workflow stayed running
    for (const bad of ['\u20acuro', 'emoji \u{1F600}', 'bell \u0007', 'del \u007f']) {
      const problems = problemsOf(call({ headers: { 'X-Note': bad } }));
      assert.ok(problems.some((p) => p.includes('header values are Latin-1 text without control characters')), `${JSON.stringify(bad)}: ${problems.join('; ')}`);
      assert.ok(problemsOf(call({ headers: { Authorization: { secret: 'order-api', prefix: `${bad} ` } } })).length > 0, `prefix ${JSON.stringify(bad)}`);
    }
  });

  it('a header may name a vault secret (with a literal prefix) by a lower-case name, and nothing else', () => {
    const def = validateDefinition(call({ headers: { Authorization: { secret: 'order-api', prefix: 'Bearer ' }, 'X-Trace': 'abc' } }));
    assert.deepEqual(secretsUsedBy(def), ['order-api']);
    for (const secret of ['Order-api', '1key', 'key!', `k${'e'.repeat(63)}`]) {
      const problems = problemsOf(call({ headers: { Authorization: { secret } } }));
      assert.ok(problems.some((p) => p.includes('secret names are lower-case letters, digits, - and _')), `${secret}: ${problems.join('; ')}`);
    }
    assert.ok(problemsOf(call({ headers: { Authorization: { secret: 'order-api', value: 'sk_live_123' } } })).length > 0, 'a secret reference carries no value');
    assert.ok(problemsOf(call({ headers: { Authorization: { secret: 'order-api', prefix: 'Bearer\r\n' } } })).length > 0);
  });

  it('every request method the engine speaks is accepted, and only http(s) URLs', () => {
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) accepted(call({ method }));
    accepted(call({ url: 'HTTP://orders.example.com/v1' }));
    accepted(call({ url: 'http://orders.example.com/v1' }));
    for (const url of ['ftp://orders.example.com/v1', 'file:///etc/passwd', 'mailto:ops@example.com']) {
      assert.deepEqual(problemsOf(call({ url })), ['steps.0.url: only http and https URLs can be called'], url);
    }
  });

  it("a retry's delays are at most 366 days: a time further ahead would not be a date, and its run would be stuck", () => {
    const day = 24 * 3600 * 1000;
    const call = (retry: Record<string, number>) => ({ name: 'far', steps: [{ id: 'call', type: 'http_call', method: 'GET', url: 'http://x.test/a', retry }] });
    validateDefinition(call({ maxAttempts: 3, initialDelayMs: 366 * day, maxDelayMs: 366 * day, multiplier: 10, jitter: 1 }));
    const problems = problemsOf(call({ maxAttempts: 3, initialDelayMs: Number.MAX_SAFE_INTEGER, maxDelayMs: Number.MAX_SAFE_INTEGER }));
    assert.ok(problems.some((p) => p.startsWith('steps.0.retry.initialDelayMs:')), problems.join('; '));
    assert.ok(problems.some((p) => p.startsWith('steps.0.retry.maxDelayMs:')), problems.join('; '));
  });

  it('a delay lasts at most 366 days', () => {
    const day = 24 * 3600 * 1000;
    accepted({ name: 'wait', steps: [{ id: 'pause', type: 'delay', durationMs: 366 * day }] });
    assert.ok(problemsOf({ name: 'wait', steps: [{ id: 'pause', type: 'delay', durationMs: 366 * day + 1 }] }).some((p) => p.startsWith('steps.0.durationMs:')));
  });

  it('a problem with the whole document is reported at (root)', () => {
    assert.ok(problemsOf(null).every((p) => p.startsWith('(root): ')), problemsOf(null).join('; '));
  });
});

describe('definition helpers', () => {
  it('the error is an InvalidDefinitionError by name, listing its problems', () => {
    const e = new InvalidDefinitionError(['one', 'two']);
    assert.equal(e.name, 'InvalidDefinitionError');
    assert.equal(e.message, 'invalid workflow definition: one; two');
  });

  it('a cycle is shown from where it closes, not from the start', () => {
    assert.deepEqual(problemsOf({ name: 'c', steps: [t('intake', 'a'), t('a', 'b'), t('b', 'a')] }), ['steps form a cycle: a -> b -> a']);
  });

  it('two paths meeting again are no cycle', () => {
    const def = validateDefinition({ name: 'diamond', steps: [{ id: 'check', type: 'branch', condition: 'input.vip', then: 'left', else: 'right' }, t('left', 'done'), t('right', 'done'), end('done')] });
    assert.equal(def.steps.length, 4);
  });

  it('names the expressions of each step type, and only those present', () => {
    const steps = validateDefinition({
      name: 'x',
      steps: [
        { id: 'a', type: 'transform', expression: 'input', next: 'b' },
        { id: 'b', type: 'http_call', method: 'GET', url: 'http://x.test/', next: 'c' },
        { id: 'c', type: 'http_call', method: 'POST', url: 'http://x.test/', body: 'input', next: 'd' },
        { id: 'd', type: 'branch', condition: 'input.ok', then: 'e', else: 'f' },
        { id: 'e', type: 'delay', durationMs: 5, next: 'f' },
        { id: 'f', type: 'terminate', status: 'succeeded', output: 'steps' },
      ],
    }).steps;
    assert.deepEqual(steps.map(expressionsOf), [[['expression', 'input']], [], [['body', 'input']], [['condition', 'input.ok']], [], [['output', 'steps']]]);
    assert.deepEqual(expressionsOf(end('g') as never), []);
    assert.deepEqual(steps.map(successorsOf), [['b'], ['c'], ['d'], ['e', 'f'], ['f'], []]);
    // a terminate step ends the run whatever else it carries
    assert.deepEqual(successorsOf({ id: 'z', type: 'terminate', status: 'failed', next: 'a' } as never), []);
  });

  it('finds a step by id and names the one it lacks', () => {
    const def = validateDefinition({ name: 'order-sync', steps: [t('a', 'b'), end('b')] });
    assert.equal(stepOf(def, 'b').type, 'terminate');
    assert.throws(() => stepOf(def, 'ghost'), /^Error: workflow "order-sync" has no step "ghost"$/);
  });

  it('lists the secrets a definition uses once each, sorted, and none for steps without requests', () => {
    const def = validateDefinition({
      name: 's',
      steps: [
        { id: 'a', type: 'http_call', method: 'GET', url: 'http://x.test/', headers: { Authorization: { secret: 'zeta' }, 'X-Alt': { secret: 'alpha' }, 'X-Plain': 'text' }, next: 'b' },
        { id: 'b', type: 'http_call', method: 'GET', url: 'http://x.test/', headers: { Authorization: { secret: 'zeta' } }, next: 'c' },
        t('c'),
      ],
    });
    assert.deepEqual(secretsUsedBy(def), ['alpha', 'zeta']);
    assert.deepEqual(secretsUsedBy(validateDefinition({ name: 'n', steps: [t('a')] })), []);
  });
});
