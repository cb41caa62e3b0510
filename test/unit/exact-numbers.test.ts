import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalJson } from '../../src/domain/canonical';
import { firstInexactNumber, inexactNumberOf, parseJsonExact } from '../../src/domain/exact-numbers';

describe('numbers past what a double holds', () => {
  it('are found outside strings, and only where the text is not the value the double reads as', () => {
    assert.equal(firstInexactNumber('{"a": 1234567890123456801}'), '1234567890123456801');
    assert.equal(firstInexactNumber('{"a": -0.3000000000000000444}'), '-0.3000000000000000444');
    assert.equal(firstInexactNumber('{"a": 1' + '0'.repeat(400) + '}'), '1' + '0'.repeat(400));
    assert.equal(firstInexactNumber('{"a": "1234567890123456801", "b": "x\\"12345678901234567890"}'), null);
  });

  it('are never found in what the engine writes: the canonical JSON of doubles, as jsonb prints it back', () => {
    for (const n of [1234567890123456800, 0.1 + 0.2, 1e21, 5e-324, 1e-7, Number.MAX_VALUE, -Number.MAX_SAFE_INTEGER, 123456789012345.6, 0, 42]) {
      // jsonb prints numbers without exponents: 1e+21 comes back as 1000000000000000000000
      for (const text of [canonicalJson(n), plain(canonicalJson(n))]) assert.equal(firstInexactNumber(`{"a": ${text}}`), null, text);
    }
    assert.equal(firstInexactNumber('{"a": 0.0000001, "b": 1000000000000000000000}'), null);
  });

  it('parseJsonExact remembers the first of them with the value it read', () => {
    const v = parseJsonExact('{"a": {"b": [1, 1234567890123456801]}}');
    assert.deepEqual(v, { a: { b: [1, 1234567890123456800] } });
    assert.equal(inexactNumberOf(v), '1234567890123456801');
    assert.equal(inexactNumberOf(parseJsonExact('{"a": 1234567890123456800}')), null);
  });
});

/** A number's text without its exponent, as jsonb prints it. */
function plain(text: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
  if (!m) return text;
  const digits = m[2] + (m[3] ?? '');
  const point = m[2].length + Number(m[4]);
  if (point >= digits.length) return m[1] + digits + '0'.repeat(point - digits.length);
  if (point <= 0) return `${m[1]}0.${'0'.repeat(-point)}${digits}`;
  return `${m[1]}${digits.slice(0, point)}.${digits.slice(point)}`;
}
