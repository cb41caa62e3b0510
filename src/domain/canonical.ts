import { createHash } from 'node:crypto';

/**
 * Canonical JSON: object keys sorted, undefined dropped, no whitespace.
 * Hashes and replay comparisons go through this so key order never matters.
 *
 * The text is exactly what `JSON.stringify` gives for a copy of the value
 * with its keys sorted (`canonicalJsonReference` below, kept as the
 * definition and checked against this one by a property test), and so is
 * every hash in every log already written. It is written out directly
 * instead of building that sorted copy: verify and replay spend most of
 * their time here, and the copy was half of it.
 *
 * One subtlety carried over from JSON.stringify: keys that are array indices
 * ("0", "7", "42") come first in numeric order, then the others sorted.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  return write(value);
}

function write(value: object): string {
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += element(value[i]);
    }
    return out + ']';
  }
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  const keys = sortedKeys(value);
  let out = '{';
  let first = true;
  for (const key of keys) {
    const v = (value as Record<string, unknown>)[key];
    // JSON.stringify leaves these members out of an object
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
    out += first ? '' : ',';
    first = false;
    out += JSON.stringify(key) + ':' + (v === null || typeof v !== 'object' ? JSON.stringify(v) : write(v));
  }
  return out + '}';
}

/** An array element: what JSON.stringify writes for it (null where it leaves a member out). */
function element(v: unknown): string {
  if (v === undefined || typeof v === 'function' || typeof v === 'symbol') return 'null';
  return v === null || typeof v !== 'object' ? JSON.stringify(v) : write(v);
}

/** Own enumerable keys: array indices first in numeric order (as Object.keys gives them), the rest sorted. */
function sortedKeys(value: object): string[] {
  const keys = Object.keys(value);
  let indices = 0;
  while (indices < keys.length && isArrayIndex(keys[indices])) indices++;
  if (indices === 0) return keys.sort();
  const rest = keys.slice(indices).sort();
  keys.length = indices;
  return keys.concat(rest);
}

function isArrayIndex(key: string): boolean {
  const c = key.charCodeAt(0);
  if (c < 48 || c > 57) return false;
  const n = Number(key);
  return n < 4294967295 && String(n) === key;
}

/** The definition canonicalJson keeps to: JSON.stringify of a sorted copy. Slower; for tests. */
export function canonicalJsonReference(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === 'object') {
    // no prototype, so a "__proto__" key is kept as data instead of being swallowed
    const out: Record<string, unknown> = Object.create(null);
    for (const key of Object.keys(value as object).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Whether two values have the same canonical JSON (replay compares every decision this way). */
export function deepEqualCanonical(a: unknown, b: unknown): boolean {
  // the walk answers most comparisons without writing either text; only its "no" is checked the slow way
  return sameShape(a, b) || canonicalJson(a) === canonicalJson(b);
}

/**
 * A walk that says "equal" only when the canonical texts are surely equal:
 * the same primitives (===) in the same structure, members left undefined
 * counting as absent. Anything it is unsure of (dates, NaN, a function
 * against nothing) is a "no", which the caller settles by comparing texts.
 */
function sameShape(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameShape(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b) || a instanceof Date || b instanceof Date) return false;
  let defined = 0;
  for (const key of Object.keys(a)) {
    const va = (a as Record<string, unknown>)[key];
    if (va === undefined) continue;
    defined++;
    if (!Object.prototype.hasOwnProperty.call(b, key) || !sameShape(va, (b as Record<string, unknown>)[key])) return false;
  }
  for (const key of Object.keys(b)) if ((b as Record<string, unknown>)[key] !== undefined) defined--;
  return defined === 0;
}
