import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { backoffDelayMs } from '../../src/domain/backoff';
import { retryPolicySchema } from '../../src/domain/definition-schema';

describe('retry backoff', () => {
  const exact = retryPolicySchema.parse({ maxAttempts: 10, initialDelayMs: 100, multiplier: 2, maxDelayMs: 1000, jitter: 0 });

  it('grows exponentially from the initial delay (attempt 2 waits initialDelayMs)', () => {
    assert.deepEqual([2, 3, 4, 5].map((n) => backoffDelayMs(exact, n, 0.5)), [100, 200, 400, 800]);
  });

  it('is capped at maxDelayMs', () => {
    assert.deepEqual([6, 7, 20, 100].map((n) => backoffDelayMs(exact, n, 0.5)), [1000, 1000, 1000, 1000]);
  });

  it('multiplier 1 is a constant delay', () => {
    const flat = retryPolicySchema.parse({ initialDelayMs: 250, multiplier: 1, jitter: 0 });
    assert.deepEqual([2, 3, 4].map((n) => backoffDelayMs(flat, n, 0.9)), [250, 250, 250]);
  });

  it('jitter spreads the delay within ±jitter around the nominal value', () => {
    const p = retryPolicySchema.parse({ initialDelayMs: 1000, multiplier: 2, maxDelayMs: 60_000, jitter: 0.2 });
    assert.equal(backoffDelayMs(p, 2, 0), 800);
    assert.equal(backoffDelayMs(p, 2, 0.5), 1000);
    assert.equal(backoffDelayMs(p, 2, 0.999999), 1200);
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 30 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (attempt, draw, jitter) => {
        const policy = { ...p, jitter };
        const nominal = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 2));
        const d = backoffDelayMs(policy, attempt, draw);
        return d >= Math.floor(nominal * (1 - jitter)) && d <= Math.ceil(nominal * (1 + jitter));
      }),
    );
  });

  it('is a pure function of the recorded draw', () => {
    const p = retryPolicySchema.parse({});
    fc.assert(fc.property(fc.double({ min: 0, max: 1, noNaN: true }), (draw) => backoffDelayMs(p, 3, draw) === backoffDelayMs(p, 3, draw)));
  });

  it('treats an out-of-range or non-finite draw safely', () => {
    const p = retryPolicySchema.parse({ initialDelayMs: 1000, jitter: 0.5 });
    assert.equal(backoffDelayMs(p, 2, Number.NaN), 500);
    assert.equal(backoffDelayMs(p, 2, -3), 500);
    assert.equal(backoffDelayMs(p, 2, 7), 1500);
  });
});
