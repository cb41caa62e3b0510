import { registerFunction, TYPE_NUMBER, TYPE_STRING } from '@jmespath-community/jmespath';

/*
 * How big an expression may make things while it is evaluated (semantics 4).
 *
 * Semantics 3 bounds what an expression gives, but only once it has given it: `pad_left('x', input.n)` still
 * built a 100 MB string first, `replace(s, 'a', 'b', input.n)` spread an array of n numbers (n = 300,000,000
 * ended the process: "JavaScript heap out of memory"), and a projection repeating a large part of the input,
 * `items[*].{a: input}`, took JSON.stringify past 2 GB and two minutes. A worker process is shared by every
 * project, so one webhook could stall or end it for all.
 *
 * So, while a run of semantics 4 evaluates an expression, the library's string builders refuse to make a string
 * longer than a result may be, before making it, and a result is measured from below with an early stop before
 * it is serialized. Runs of earlier semantics get the library's results exactly as before; only the spread of
 * `replace` with a count is replaced by a loop that stops once nothing changes, which gives the same string
 * without the array.
 */

/** the most characters a string builder may make while an expression of a semantics 4 run is evaluated; null otherwise */
let bound: number | null = null;

/** Evaluate with the builders bounded to `limit` characters (null: as the library does). Not re-entrant: evaluation is synchronous. */
export function withBound<T>(limit: number | null, evaluate: () => T): T {
  const before = bound;
  bound = limit;
  try {
    return evaluate();
  } finally {
    bound = before;
  }
}

/** how many times the longest string a builder may make `replace` with a count may search in all */
const SEARCH_BOUND = 16;

function tooLong(fn: string, length: number, limit: number): Error {
  return new Error(`${fn} would make a string of ${length} characters, more than the ${limit} a result may be`);
}

function nonNegativeInteger(value: unknown): number {
  // the library's own check and message, so a bad argument reads the same as before
  if (typeof value !== 'number' || value < 0 || Math.floor(value) !== value) throw new Error('invalid-value: expecting a non-negative integer.');
  return value;
}

function pad(fn: 'pad_left' | 'pad_right', [subject, width, padding]: unknown[]): string {
  const p = typeof padding === 'string' && padding !== '' ? padding : ' ';
  if (p.length > 1) throw new Error(`invalid value, ${fn} expects its 'pad' parameter to be a valid string with a single codepoint`);
  nonNegativeInteger(width);
  const s = subject as string;
  if (bound !== null && (width as number) > bound && (width as number) > s.length) throw tooLong(fn, width as number, bound);
  // the library's quirk kept: an empty subject stays empty
  return (s && (fn === 'pad_left' ? s.padStart(width as number, p) : s.padEnd(width as number, p))) || '';
}

function replace([subject, search, by, count]: unknown[]): string {
  let s = subject as string;
  const from = search as string;
  const to = by as string;
  if (count === undefined || count === null) {
    if (bound !== null) {
      // the length split + join makes, counted before it is made
      const hits = from === '' ? Math.max(s.length - 1, 0) : occurrences(s, from);
      const length = s.length + hits * (to.length - from.length);
      if (length > bound) throw tooLong('replace', length, bound);
    }
    return s.split(from).join(to);
  }
  if (count === 0) return s;
  nonNegativeInteger(count);
  // the library spread an array of `count` numbers first: past 2^32 - 1 that is its RangeError, below it can end the process
  if ((count as number) > 2 ** 32 - 1) throw new RangeError('Invalid array length');
  // each round searches the string from its start again: a 2 MiB string of 'a' with a count of a million
  // would be hours of searching, so the characters searched are bounded too (a few tens of milliseconds)
  let searched = 0;
  for (let i = 0; i < (count as number); i++) {
    searched += s.length;
    if (bound !== null && searched > SEARCH_BOUND * bound) throw new Error(`replace with a count of ${count} would search more than ${SEARCH_BOUND * bound} characters`);
    const next = s.replace(from, to);
    // the same string in, the same string out: every later round would change nothing either
    if (next === s) break;
    s = next;
    if (bound !== null && s.length > bound) throw tooLong('replace', s.length, bound);
  }
  return s;
}

function occurrences(s: string, of: string): number {
  let n = 0;
  for (let at = s.indexOf(of); at !== -1; at = s.indexOf(of, at + of.length)) n++;
  return n;
}

const STRING = { types: [TYPE_STRING] };
const NUMBER = { types: [TYPE_NUMBER] };
registerFunction('pad_left', (args) => pad('pad_left', args), [STRING, NUMBER, { ...STRING, optional: true }], { override: true });
registerFunction('pad_right', (args) => pad('pad_right', args), [STRING, NUMBER, { ...STRING, optional: true }], { override: true });
registerFunction('replace', (args) => replace(args), [STRING, STRING, STRING, { ...NUMBER, optional: true }], { override: true });

/**
 * At least how many characters JSON.stringify would write for `value`, counted until the count passes `limit`
 * (then the count so far is returned, at most one value's worth past it). Escapes only add to a string's
 * length, so a count past the limit means the JSON is past it; a count within it means the JSON is at most
 * six times the limit (`\u0000` for one character), which is safe to make and measure exactly.
 */
export function jsonLengthAtLeast(value: unknown, limit: number): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && total <= limit) {
    const v = stack.pop();
    if (typeof v === 'string') total += v.length + 2;
    else if (typeof v === 'number') total += Number.isFinite(v) ? String(v).length : 4;
    else if (typeof v === 'boolean') total += v ? 4 : 5;
    else if (Array.isArray(v)) {
      total += 2 + Math.max(v.length - 1, 0);
      for (let i = v.length - 1; i >= 0; i--) stack.push(v[i] === undefined ? null : v[i]);
    } else if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined);
      total += 2 + Math.max(keys.length - 1, 0);
      for (const k of keys) {
        total += k.length + 3;
        stack.push((v as Record<string, unknown>)[k]);
      }
    } else total += 4;
  }
  return total;
}
