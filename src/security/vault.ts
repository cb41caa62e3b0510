import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Keyring, KeyringError } from './keyring';

/*
 * Sealed values: AES-256-GCM under the keyring's "secrets" subkey, bound to
 * where they belong (project, kind, name) and to when they were sealed, as
 * associated data: a sealed value copied to another project or name no
 * longer opens, and one written back after a later one is older than what a
 * checkpoint saw (a time no one can change without the value failing to
 * open). Stored as text:
 *   mh2.<key id>.<sealed at, ms>.<iv>.<ciphertext>.<tag>   (base64url parts)
 * Values sealed before they carried their time (mh1, five parts) still open.
 */

const PREFIX = 'mh2';
const OLD_PREFIX = 'mh1';

export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

const timedAad = (aad: string, ms: string): string => `${aad}|sealed-at:${ms}`;

export function seal(keyring: Keyring, plaintext: string, aad: string, at: Date = new Date()): string {
  const iv = randomBytes(12);
  const ms = String(at.getTime());
  const cipher = createCipheriv('aes-256-gcm', keyring.key('secrets'), iv);
  cipher.setAAD(Buffer.from(timedAad(aad, ms), 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [PREFIX, keyring.activeId, ms, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
}

export function open(keyring: Keyring, sealed: string, aad: string): string {
  return openTimed(keyring, sealed, aad).value;
}

/** The value, and when it was sealed (null for a value sealed before values carried their time). */
export function openTimed(keyring: Keyring, sealed: string, aad: string): { value: string; sealedAt: string | null } {
  const parts = sealed.split('.');
  const timed = parts.length === 6 && parts[0] === PREFIX && /^\d{1,15}$/.test(parts[2]);
  if (!timed && !(parts.length === 5 && parts[0] === OLD_PREFIX)) throw new SealError('not a sealed value');
  const [, kid, iv, ct, tag] = timed ? [parts[0], parts[1], parts[3], parts[4], parts[5]] : parts;
  const value = decrypt(keyring, kid, iv, ct, tag, timed ? timedAad(aad, parts[2]) : aad);
  return { value, sealedAt: timed ? new Date(Number(parts[2])).toISOString() : null };
}

function decrypt(keyring: Keyring, kid: string, iv: string, ct: string, tag: string, aad: string): string {
  let key: Buffer;
  try {
    key = keyring.key('secrets', kid);
  } catch (e) {
    throw new SealError((e as KeyringError).message);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    throw new SealError('a sealed value failed its integrity check (wrong key, or moved to another project or name)');
  }
}

/** The key id a sealed value was made with (for rotation reports). */
export function sealedWith(sealed: string): string | null {
  const parts = sealed.split('.');
  return (parts.length === 6 && parts[0] === PREFIX) || (parts.length === 5 && parts[0] === OLD_PREFIX) ? parts[1] : null;
}

/** Sealed before values carried their time: sealing it again (keys rotate) gives it one. */
export function sealedUntimed(sealed: string): boolean {
  return sealed.startsWith(`${OLD_PREFIX}.`);
}

export const signingAad = (projectId: string, workflowId: string): string => `${projectId}:signing:${workflowId}`;
export const secretAad = (projectId: string, name: string): string => `${projectId}:secret:${name}`;
