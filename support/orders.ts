import { expect } from 'expect';

/* The order the scenarios deliver, as a shop would send it. */

export const ORDER = { order: { id: 'A-1001', sum: 42.5, currency: 'EUR', customer: { name: 'Ada Lovelace', email: 'ada@example.com' } } };

/** On a refusal, show the intake's answer, not just its status. */
export function expectAccepted(answer: { status: number; body: unknown }): void {
  expect({ status: answer.status, body: answer.status === 202 ? 'accepted' : answer.body }).toEqual({ status: 202, body: 'accepted' });
}
