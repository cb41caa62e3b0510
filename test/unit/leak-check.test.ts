import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Redactor } from '../../src/security/redact';
import { findLeaks } from '../../support/leak-check';

const secrets = [
  { name: 'orders-token', value: 'sk_live_4eC39HqLyjWDarjtT1zdp7dc' },
  { name: 'signing', value: 'whsec_0f1e2d3c4b5a69788796a5b4c3d2e1f0' },
];
const token = secrets[0].value;

describe('the leak check finds a secret in every form it travels in', () => {
  const cases: Array<[string, string]> = [
    ['as is, in a JSON event', JSON.stringify({ type: 'HttpRequestPrepared', data: { headers: { authorization: `Bearer ${token}` } } })],
    ['base64 standing alone', `credential=${Buffer.from(token).toString('base64')}`],
    ['base64 inside basic auth (offset 1)', `Basic ${Buffer.from(`u:${token}`).toString('base64')}`],
    ['base64 inside a longer blob (offset 2)', Buffer.from(`ab${token}xyz`).toString('base64')],
    ['base64 inside a longer blob (offset 0)', Buffer.from(`abc${token}`).toString('base64')],
    ['URL-safe base64', Buffer.from(`??${token}`).toString('base64url')],
    ['URL-encoded', `https://api.example.com/?key=${encodeURIComponent(`${token}/+= x`)}`],
    ['split across two writes of a worker log, joined as one stream', ['{"msg":"sent","auth":"sk_live_4eC39H', 'qLyjWDarjtT1zdp7dc"}\n'].join('')],
  ];
  for (const [name, text] of cases) {
    it(name, () => {
      const leaks = findLeaks(secrets, [{ place: 'the place', text }]);
      assert.ok(leaks.some((l) => l.startsWith('orders-token') && l.endsWith('in the place')), `${name}: ${JSON.stringify(leaks)} in ${text}`);
    });
  }

  // hostile round 7: a header carries a Latin-1 secret as one byte a character; an echo of those bytes read as UTF-8
  const latin1 = [{ name: 'latin1-token', value: 'pässwörd-Zq81x7Kd2' }];
  const bytes = Buffer.from(latin1[0].value, 'latin1');
  const latin1Cases: Array<[string, string]> = [
    ['a Latin-1 secret echoed as bytes and read as UTF-8', `authorization: Bearer ${bytes.toString('utf8')}\r\n`],
    ['a Latin-1 secret echoed in base64 of its bytes', `seen=${Buffer.concat([Buffer.from('x:'), bytes]).toString('base64')}`],
    ['a Latin-1 secret echoed percent-encoded byte by byte', `token=p%E4ssw%F6rd-Zq81x7Kd2&x=1`],
  ];
  for (const [name, text] of latin1Cases) {
    it(name, () => {
      assert.ok(findLeaks(latin1, [{ place: 'the place', text }]).length > 0, `${name}: ${text}`);
      assert.ok(!new Redactor(latin1).redactText(text).includes('Zq81x7Kd2'), `${name}: not redacted`);
    });
  }

  it('and stays quiet on text without a secret, or with its redaction', () => {
    const redacted = new Redactor(secrets).redactText(`Bearer ${token} and ${Buffer.from(token).toString('base64')}`);
    assert.equal(redacted, 'Bearer [redacted:orders-token] and [redacted:orders-token]');
    assert.deepEqual(findLeaks(secrets, [{ place: 'log', text: redacted }, { place: 'log', text: 'an ordinary order A-1001 of 42.50 EUR' }]), []);
  });
});
