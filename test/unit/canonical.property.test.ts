import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalJson, canonicalJsonReference, deepEqualCanonical } from '../../src/domain/canonical';

/*
 * canonicalJson is written out directly for speed; every hash in every log
 * already written was made with the slower definition (JSON.stringify of a
 * key-sorted copy). The two must give the same text for any value, or old
 * logs would stop verifying.
 */

// keys that trip up a hand-written serializer: array indices, near-indices, __proto__, escapes, surrogates
const awkwardKey = fc.oneof(
  fc.string(),
  fc.constantFrom('0', '1', '9', '10', '42', '007', '-1', '1e3', '4294967294', '4294967295', '__proto__', 'constructor', 'a"b', '\u2028', '\ud800', 'é', 'E'),
  fc.nat().map(String),
);
const leaf = fc.oneof(
  fc.string(),
  fc.double(),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.date({ noInvalidDate: true }),
  fc.constant(() => 1),
);
const { value } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('object'), tie('nullProto')),
  array: fc.array(tie('value'), { maxLength: 5 }),
  object: fc.dictionary(awkwardKey, tie('value'), { maxKeys: 6 }),
  nullProto: fc.dictionary(awkwardKey, tie('value'), { maxKeys: 4 }).map((d) => Object.assign(Object.create(null), d)),
}));

describe('canonicalJson', () => {
  it('gives exactly the text of its reference definition for any value', () => {
    fc.assert(
      fc.property(value, (v) => {
        assert.equal(canonicalJson(v), canonicalJsonReference(v));
      }),
      { numRuns: 2000 },
    );
  });

  it('gives exactly the reference text for values read back from JSON (what logs hold)', () => {
    fc.assert(
      fc.property(fc.json(), (text) => {
        const v = JSON.parse(text);
        assert.equal(canonicalJson(v), canonicalJsonReference(v));
      }),
      { numRuns: 1000 },
    );
  });

  it('says two values are equal exactly when their canonical texts are', () => {
    // a value against itself read back from JSON, against its keys reversed, against another value
    const reversed = (v: unknown): unknown =>
      v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date)
        ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)]))
        : Array.isArray(v) ? v.map(reversed) : v;
    const pair = fc.oneof(
      fc.tuple(value, value),
      value.map((v) => [v, JSON.parse(JSON.stringify(v) ?? 'null')] as [unknown, unknown]),
      value.map((v) => [v, reversed(v)] as [unknown, unknown]),
    );
    fc.assert(
      fc.property(pair, ([a, b]) => {
        assert.equal(deepEqualCanonical(a, b), canonicalJsonReference(a) === canonicalJsonReference(b));
      }),
      { numRuns: 3000 },
    );
    assert.equal(deepEqualCanonical({ a: 1, b: undefined }, { a: 1 }), true);
    assert.equal(deepEqualCanonical({ a: 1 }, { a: 1, c: 2 }), false);
    assert.equal(deepEqualCanonical({ at: new Date(0) }, { at: '1970-01-01T00:00:00.000Z' }), true);
    assert.equal(deepEqualCanonical([1, 2], { 0: 1, 1: 2 }), false);
  });

  it('orders array-index keys numerically first, the rest by code unit, as JSON.stringify would', () => {
    assert.equal(canonicalJson({ b: 1, 10: 2, a: 3, 9: 4, '07': 5 }), '{"9":4,"10":2,"07":5,"a":3,"b":1}');
    assert.equal(canonicalJson([undefined, () => 1, new Date(0)]), '[null,null,"1970-01-01T00:00:00.000Z"]');
    assert.equal(canonicalJson(undefined), undefined);
  });
});
