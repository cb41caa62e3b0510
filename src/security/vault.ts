import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Keyring, KeyringError } from './keyring';

/*
 * Sealed values: AES-256-GCM under the keyring's "secrets" subkey, bound to
 * where they belong (project, kind, name) as associated data, so a sealed
 * value copied to another project or name no longer opens. Stored as text:
 *   mh1.<key id>.<iv>.<ciphertext>.<tag>   (base64url parts)
 */

const PREFIX = 'mh1';

export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealError';
  }
}

export function seal(keyring: Keyring, plaintext: string, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyring.key('secrets'), iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [PREFIX, keyring.activeId, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
}

export function open(keyring: Keyring, sealed: string, aad: string): string {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== PREFIX) throw new SealError('not a sealed value');
  const [, kid, iv, ct, tag] = parts;
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
  return parts.length === 5 && parts[0] === PREFIX ? parts[1] : null;
}

export const signingAad = (projectId: string, workflowId: string): string => `${projectId}:signing:${workflowId}`;
export const secretAad = (projectId: string, name: string): string => `${projectId}:secret:${name}`;
