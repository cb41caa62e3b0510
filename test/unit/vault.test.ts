import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Keyring } from '../../src/security/keyring';
import { open, openTimed, seal, sealedUntimed, sealedWith, secretAad } from '../../src/security/vault';

const KEYS = Keyring.generate('k-vault');
const AAD = secretAad('p-1', 'orders-api');

/** A value as engines before sealed values carried their time wrote it (mh1, five parts). */
function sealUntimed(plaintext: string, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', KEYS.key('secrets'), iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return ['mh1', KEYS.activeId, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
}

describe('sealed values', () => {
  it('carry when they were sealed, where it cannot be changed without the value failing to open', () => {
    const at = new Date('2026-12-07T10:00:00.000Z');
    const sealed = seal(KEYS, 'sk_live_0123456789abcdef', AAD, at);
    assert.deepEqual(openTimed(KEYS, sealed, AAD), { value: 'sk_live_0123456789abcdef', sealedAt: at.toISOString() });
    assert.equal(sealedWith(sealed), 'k-vault');
    assert.equal(sealedUntimed(sealed), false);
    const parts = sealed.split('.');
    parts[2] = String(at.getTime() + 60_000); // claims a later sealing
    assert.throws(() => open(KEYS, parts.join('.'), AAD), /failed its integrity check/);
    assert.throws(() => open(KEYS, sealed, secretAad('p-2', 'orders-api')), /failed its integrity check/);
  });

  it('sealed before values carried their time still open, with no time', () => {
    const old = sealUntimed('sk_live_0123456789abcdef', AAD);
    assert.deepEqual(openTimed(KEYS, old, AAD), { value: 'sk_live_0123456789abcdef', sealedAt: null });
    assert.equal(sealedUntimed(old), true);
    assert.equal(sealedWith(old), 'k-vault');
    assert.throws(() => open(KEYS, 'mh3.x.y.z', AAD), /not a sealed value/);
  });
});
