import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hkdfSync, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ChainKey, ChainKeys } from '../domain/hash-chain';
import { writeFileDurably } from './durable-file';

/*
 * The engine's keys, which the database never holds. One master key per id;
 * the first is active (new seals and new hash links use it), the others stay
 * readable, which is how a key is rotated: put a new one first, run
 * `meshhook keys rotate`, drop the old one once nothing refers to it.
 * Each use gets its own subkey (HKDF-SHA256), so sealing secrets, keying the
 * log's hash chain and signing tokens never share key material.
 *
 *   MESHHOOK_KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"   (first = active)
 *   MESHHOOK_KEY_FILE=/path/keyring.json   {"keys":[{"id":"k2","key":"<base64>"},...]}
 */

export type KeyPurpose = 'secrets' | 'chain' | 'tokens' | 'checkpoints' | 'run-ids';

const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;

export class KeyringError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyringError';
  }
}

export class Keyring {
  private readonly keys: Map<string, Buffer>;
  private readonly derived = new Map<string, Buffer>();
  readonly activeId: string;

  constructor(entries: Array<{ id: string; key: Buffer }>) {
    if (entries.length === 0) throw new KeyringError('a keyring needs at least one key');
    for (const e of entries) {
      if (!KEY_ID.test(e.id)) throw new KeyringError(`key id "${e.id.slice(0, 40)}" is not 1-32 of A-Z a-z 0-9 _ -`);
      if (e.key.length < 32) throw new KeyringError(`key ${e.id} is ${e.key.length} bytes; keys are 32 random bytes`);
    }
    this.keys = new Map(entries.map((e) => [e.id, e.key]));
    if (this.keys.size !== entries.length) throw new KeyringError('two keys share an id');
    this.activeId = entries[0].id;
  }

  get ids(): string[] {
    return [...this.keys.keys()];
  }

  has(id: string): boolean {
    return this.keys.has(id);
  }

  /** The subkey for a purpose, of the active key or of a named one. */
  key(purpose: KeyPurpose, id = this.activeId): Buffer {
    const cacheKey = `${id}/${purpose}`;
    let k = this.derived.get(cacheKey);
    if (!k) {
      const master = this.keys.get(id);
      if (!master) throw new KeyringError(`no key "${id}" in the keyring (it was rotated out, or this is another installation's data)`);
      k = Buffer.from(hkdfSync('sha256', master, 'meshhook-replay', `meshhook:${purpose}`, 32));
      this.derived.set(cacheKey, k);
    }
    return k;
  }

  /** The key new hash-chain links and run heads are signed with. */
  chainKey(): ChainKey {
    return { kid: this.activeId, key: this.key('chain') };
  }

  /**
   * The key a delivery's run id is derived with: of the oldest key in the ring (rotation puts new keys first and
   * keeps the old), so the id a delivery derives to stays the same across rotations for as long as that key is kept.
   */
  runIdKey(): ChainKey {
    const oldest = this.ids[this.ids.length - 1];
    return { kid: oldest, key: this.key('run-ids', oldest) };
  }

  /** Every chain key this keyring can check links with. */
  chainKeys(): ChainKeys {
    // verify asks once per event: the answer per key id is kept
    const found = new Map<string, Buffer | null>();
    return (kid) => {
      let k = found.get(kid);
      if (k === undefined) {
        k = this.keys.has(kid) ? this.key('chain', kid) : null;
        if (found.size < 64) found.set(kid, k);
      }
      return k;
    };
  }

  /** Every chain key by its id, to hand to a thread of this process (chainKeys() is a function, which cannot cross). */
  chainKeyTable(): Array<{ kid: string; key: Buffer }> {
    return this.ids.map((kid) => ({ kid, key: this.key('chain', kid) }));
  }

  /** MESHHOOK_KEYS form, to hand the same keys to a child process. */
  toEnv(): string {
    return [...this.keys.entries()].map(([id, k]) => `${id}:${k.toString('base64')}`).join(',');
  }

  static generate(id = `k${Date.now().toString(36)}`): Keyring {
    return new Keyring([{ id, key: randomBytes(32) }]);
  }

  static parse(text: string): Keyring {
    const entries = text
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((pair) => {
        const colon = pair.indexOf(':');
        if (colon < 1) throw new KeyringError('MESHHOOK_KEYS is "<id>:<base64 key>[,<id>:<base64 key>...]"');
        return { id: pair.slice(0, colon), key: Buffer.from(pair.slice(colon + 1), 'base64') };
      });
    return new Keyring(entries);
  }

  static fromFile(file: string): Keyring {
    let parsed: { keys?: Array<{ id: string; key: string }> };
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new KeyringError(`cannot read the key file ${file}: ${(e as Error).message}`);
    }
    if (!Array.isArray(parsed.keys)) throw new KeyringError(`${file} holds no "keys" list`);
    return new Keyring(parsed.keys.map((k) => ({ id: String(k.id), key: Buffer.from(String(k.key), 'base64') })));
  }

  /** The keyring from MESHHOOK_KEYS or MESHHOOK_KEY_FILE; null when neither is set. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): Keyring | null {
    if (env.MESHHOOK_KEYS) return Keyring.parse(env.MESHHOOK_KEYS);
    if (env.MESHHOOK_KEY_FILE) return Keyring.fromFile(env.MESHHOOK_KEY_FILE);
    return null;
  }

  /** Like fromEnv, but a missing keyring is an error that says how to give one. */
  static required(env: NodeJS.ProcessEnv = process.env): Keyring {
    const k = Keyring.fromEnv(env);
    if (!k) throw new KeyringError('no keys: set MESHHOOK_KEYS or MESHHOOK_KEY_FILE (`meshhook up` makes a key file in its home)');
    return k;
  }
}

/** Read a key file, creating it (mode 0600) with one fresh key when it does not exist yet. */
export function ensureKeyFile(file: string): Keyring {
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true });
    const k = randomBytes(32);
    const id = `k${Date.now().toString(36)}`;
    // whole or not there, even if killed as it is written (an empty key file would stop every later start); a file
    // made meanwhile by another process stands
    writeFileDurably(file, JSON.stringify({ keys: [{ id, key: k.toString('base64') }] }, null, 2) + '\n', { mode: 0o600, exclusive: true });
  }
  chmodSync(file, 0o600);
  return Keyring.fromFile(file);
}

/** Put a fresh key first in a key file (it becomes active); the old ones stay readable. */
export function addKeyToFile(file: string): string {
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as { keys: Array<{ id: string; key: string }> };
  const id = `k${Date.now().toString(36)}`;
  parsed.keys.unshift({ id, key: randomBytes(32).toString('base64') });
  // the old keys stay on disk until the new file is whole: written in place, a kill half way lost every key
  writeFileDurably(file, JSON.stringify(parsed, null, 2) + '\n', { mode: 0o600 });
  return id;
}

/**
 * The HS256 secret of project tokens (the intake's run API and the live-log
 * server): MESHHOOK_JWT_SECRET when set (to share it with an official
 * Supabase Realtime server, whose API_JWT_SECRET it must equal), else derived
 * from the keyring.
 */
export function tokenSecret(keyring: Keyring, env: NodeJS.ProcessEnv = process.env): string {
  return env.MESHHOOK_JWT_SECRET || keyring.key('tokens').toString('base64url');
}
