import * as crypto from 'node:crypto';
import { canonicalJson, sha256 } from './canonical';
import { inexactNumberOf } from './exact-numbers';

/*
 * The run log's hash chain. Each event's hash covers the previous hash and
 * the event's own canonical content, so an edited, deleted, reordered or
 * inserted event breaks the chain at that point.
 *
 * A plain SHA-256 chain can be recomputed by anyone who can write the table,
 * so since semantics 2 each link is an HMAC-SHA256 under the keyring's
 * "chain" subkey, which the database never holds; `kid` names the key, so
 * keys can be rotated while old links stay checkable. The keyed content also
 * covers the project, so events cannot be moved between projects. Links with
 * no kid are the plain SHA-256 links of the first releases.
 */

/** The key that signs new links and heads: the keyring's active key, by id. */
export interface ChainKey {
  kid: string;
  key: Buffer;
}

/** Looks up the key of an older link; null when it is not held. */
export type ChainKeys = (kid: string) => Buffer | null;

/** The hash before event 1: tied to the run so events cannot be moved between runs. */
export function genesisHash(runId: string): string {
  return sha256(`meshhook-replay:genesis:${runId}`);
}

export interface HashedContent {
  runId: string;
  /** the project's id; covered by keyed links only */
  project?: string;
  seq: number;
  type: string;
  version: number;
  data: unknown;
  recordedAt: string;
}

export function eventHash(prevHash: string, content: HashedContent, key?: Buffer | null, dataText?: string): string {
  const text = linkedText(content, !!key, dataText);
  if (!key) return sha256(prevHash + '\n' + text);
  return hmacSha256Hex(key, prevHash + '\n' + text);
}

/*
 * HMAC-SHA256 (RFC 2104) written out over the one-shot hash: a Hmac object
 * per link cost more than the hashing itself, and verify computes one per
 * event. The padded keys are made once per key. Where crypto.hash is missing
 * (Node before 20.12) the Hmac object is used; a unit test holds both equal.
 */
const oneShot = (crypto as { hash?: (algorithm: string, data: Buffer, encoding: string) => Buffer | string }).hash;
const pads = new WeakMap<Buffer, { inner: Buffer; outer: Buffer }>();
let scratch = Buffer.allocUnsafe(4096);

export function hmacSha256Hex(key: Buffer, text: string): string {
  // (a text of over a million units is hashed the usual way, so the scratch buffer never holds on to megabytes)
  if (!oneShot || key.length > 64 || text.length > 1 << 20) return crypto.createHmac('sha256', key).update(text).digest('hex');
  let p = pads.get(key);
  if (!p) {
    const inner = Buffer.alloc(64, 0x36);
    const outer = Buffer.alloc(96, 0x5c);
    for (let i = 0; i < key.length; i++) {
      inner[i] ^= key[i];
      outer[i] ^= key[i];
    }
    p = { inner, outer };
    pads.set(key, p);
  }
  // at most 3 bytes of UTF-8 per UTF-16 unit
  if (64 + text.length * 3 > scratch.length) scratch = Buffer.allocUnsafe(64 + text.length * 3);
  p.inner.copy(scratch, 0);
  const n = scratch.write(text, 64, 'utf8');
  (oneShot('sha256', scratch.subarray(0, 64 + n), 'buffer') as Buffer).copy(p.outer, 64);
  return oneShot('sha256', p.outer, 'hex') as string;
}

/**
 * The canonical JSON of what a link covers: {runId, seq, type, version, data,
 * recordedAt}, plus the project when keyed. Written out in its sorted key
 * order so the data's text, already made by the caller (to store it or to
 * compare it), is not made twice; anything unusual takes the general path.
 */
function linkedText(c: HashedContent, keyed: boolean, dataText?: string): string {
  const project = c.project ?? null;
  if (
    c.data === undefined ||
    typeof c.runId !== 'string' ||
    typeof c.type !== 'string' ||
    typeof c.recordedAt !== 'string' ||
    typeof c.seq !== 'number' ||
    typeof c.version !== 'number' ||
    (keyed && project !== null && typeof project !== 'string')
  ) {
    const fields = { runId: c.runId, seq: c.seq, type: c.type, version: c.version, data: c.data, recordedAt: c.recordedAt };
    return canonicalJson(keyed ? { ...fields, project } : fields);
  }
  return (
    '{"data":' +
    (dataText ?? canonicalJson(c.data)) +
    (keyed ? ',"project":' + JSON.stringify(project) : '') +
    ',"recordedAt":' +
    JSON.stringify(c.recordedAt) +
    ',"runId":' +
    JSON.stringify(c.runId) +
    ',"seq":' +
    JSON.stringify(c.seq) +
    ',"type":' +
    JSON.stringify(c.type) +
    ',"version":' +
    JSON.stringify(c.version) +
    '}'
  );
}

export interface ChainBreak {
  seq: number;
  reason: string;
}

export interface ChainedEvent extends HashedContent {
  prevHash: string;
  hash: string;
  kid?: string | null;
}

export interface ChainOptions {
  /** every link must be keyed (a run started under semantics 2 or later) */
  requireKeyed?: boolean;
}

/** Whether one link holds: the event follows `prev` as event number `seq`. */
export function checkLink(prev: string, seq: number, e: ChainedEvent, keys: ChainKeys | null, mustBeKeyed: boolean, dataText?: string): ChainBreak | null {
  if (e.seq > seq) return { seq, reason: `event ${seq} is missing from its place: event ${e.seq} comes next (deleted or moved)` };
  if (e.seq !== seq) return { seq, reason: `event ${e.seq} appears again where event ${seq} should be (moved or copied)` };
  if (e.prevHash !== prev)
    return {
      seq: e.seq,
      // the first link hangs off the run's own genesis: another one means the log was written for another run
      reason: seq === 1 ? "it does not begin this run's chain: it was written for another run (moved, copied or swapped)" : 'its previous-hash does not match the event before it',
    };
  let key: Buffer | null = null;
  if (e.kid) {
    if (!keys) return { seq: e.seq, reason: `it is signed with key "${e.kid}", and no keyring was given to check it` };
    key = keys(e.kid);
    if (!key) return { seq: e.seq, reason: `it is signed with key "${e.kid}", which is not in the keyring` };
  } else if (mustBeKeyed) {
    return { seq: e.seq, reason: 'it is not signed with the chain key (an event written from outside the engine)' };
  }
  if (e.hash !== eventHash(prev, e, key, dataText)) return { seq: e.seq, reason: 'its content does not match its hash (edited after it was written)' };
  // the hash covers the doubles its numbers read as; digits beyond those were written outside the engine
  const inexact = inexactNumberOf(e.data);
  if (inexact !== null) return { seq: e.seq, reason: `it holds the number ${shown(inexact)}, which the engine never wrote: it reads as ${Number(inexact)}, and the digits beyond that were put there outside the engine` };
  return null;
}

function shown(token: string): string {
  return token.length > 40 ? `${token.slice(0, 40)}…` : token;
}

/**
 * The first broken link of a log, or null when every link holds. Once a link
 * is keyed every later one must be; a run started under semantics 2 or later
 * must be keyed from its first event.
 */
export function checkChain(runId: string, events: ReadonlyArray<ChainedEvent>, keys: ChainKeys | null = null, opts: ChainOptions = {}): ChainBreak | null {
  let prev = genesisHash(runId);
  let keyed = opts.requireKeyed ?? false;
  for (const [i, e] of events.entries()) {
    const broken = checkLink(prev, i + 1, e, keys, keyed);
    if (broken) return broken;
    if (e.kid) keyed = true;
    prev = e.hash;
  }
  return null;
}

// ───── the run's head: its last event, signed

export interface RunHead {
  projectId: string;
  runId: string;
  seq: number;
  hash: string;
}

/** `<kid>:<hex HMAC>` over the head; stored with the run view and written to checkpoints. */
export function signHead(key: ChainKey, head: RunHead): string {
  return `${key.kid}:${headMac(key.key, head)}`;
}

function headMac(key: Buffer, h: RunHead): string {
  return hmacSha256Hex(key, `meshhook-head\n${h.projectId}\n${h.runId}\n${h.seq}\n${h.hash}`);
}

/** A `<kid>:<hex>` signature taken apart: the key it names (null when the keyring does not hold it) and its MAC. */
export function signatureParts(keys: ChainKeys, signature: string): { kid: string; key: Buffer | null; mac: string } {
  const colon = signature.indexOf(':');
  const kid = signature.slice(0, colon);
  return { kid, key: colon > 0 ? keys(kid) : null, mac: signature.slice(colon + 1) };
}

/** Why a signed head is not genuine, or null when it is. */
export function checkHeadSignature(keys: ChainKeys, head: RunHead, signature: string | null): string | null {
  if (!signature) return 'the run has no signed head';
  const { kid, key, mac } = signatureParts(keys, signature);
  if (!key) return `its head is signed with key "${kid}", which is not in the keyring`;
  return mac === headMac(key, head) ? null : 'its head signature does not match (the head was changed outside the engine)';
}

// ───── a published workflow version, signed

export interface VersionIdentity {
  projectId: string;
  workflowId: string;
  version: number;
  /** the definition's hash (sha256 of its canonical JSON) */
  definitionHash: string;
}

/** `<kid>:<hex HMAC>` over a published version; stored with it, checked before a run of it starts. */
export function signVersion(key: ChainKey, v: VersionIdentity): string {
  return `${key.kid}:${versionMac(key.key, v)}`;
}

function versionMac(key: Buffer, v: VersionIdentity): string {
  return hmacSha256Hex(key, `meshhook-version\n${v.projectId}\n${v.workflowId}\n${v.version}\n${v.definitionHash}`);
}

/** Why a version's signature is not genuine, or null when it is. */
export function checkVersionSignature(keys: ChainKeys, v: VersionIdentity, signature: string | null): string | null {
  if (!signature) return 'it is not signed (published before versions were signed, or written outside the engine)';
  const { kid, key, mac } = signatureParts(keys, signature);
  if (!key) return `it is signed with key "${kid}", which is not in the keyring`;
  return mac === versionMac(key, v) ? null : 'its signature does not match (the definition or its hash was changed outside the engine)';
}

/**
 * The same events linked again from the genesis under another chain key:
 * content, numbers and order unchanged, every link and kid new. Only for
 * handing a run that verified under its own keys to a place that checks with
 * other keys (a golden history for the suite); never for a live log.
 */
export function relink<E extends ChainedEvent>(runId: string, events: readonly E[], key: ChainKey): E[] {
  let prev = genesisHash(runId);
  return events.map((e) => {
    const hash = eventHash(prev, e, key.key);
    const out = { ...e, prevHash: prev, hash, kid: key.kid };
    prev = hash;
    return out;
  });
}

/**
 * `<kid>:<granted at>:<hex HMAC>` over a project's leave to call private addresses and when it was granted:
 * granted by the engine, so that a row switched on by someone else with the database is not taken for it.
 * The time lets a checkpoint that saw the leave taken away tell an old grant written back from a new one.
 */
export function signPrivateTargets(key: ChainKey, projectId: string, grantedAt: string): string {
  return `${key.kid}:${grantedAt}:${hmacSha256Hex(key.key, `meshhook-private-targets\n${projectId}\ntrue\n${grantedAt}`)}`;
}

/**
 * A project's leave to call private addresses as its signature says: whether the engine granted it, and when
 * (null for a grant signed before grants carried their time, `<kid>:<hex>`).
 */
export function privateTargetsGrant(keys: ChainKeys, projectId: string, signature: string | null): { granted: boolean; grantedAt: string | null } {
  const refused = { granted: false, grantedAt: null };
  if (!signature) return refused;
  const first = signature.indexOf(':');
  const last = signature.lastIndexOf(':');
  const key = first > 0 ? keys(signature.slice(0, first)) : null;
  if (!key) return refused;
  const mac = signature.slice(last + 1);
  if (first === last) return mac === hmacSha256Hex(key, `meshhook-private-targets\n${projectId}\ntrue`) ? { granted: true, grantedAt: null } : refused;
  const grantedAt = signature.slice(first + 1, last);
  return mac === hmacSha256Hex(key, `meshhook-private-targets\n${projectId}\ntrue\n${grantedAt}`) ? { granted: true, grantedAt } : refused;
}

/**
 * `deny:<kid>:<deniedAt>:<hex>`: the engine took a project's leave to call private addresses away at `deniedAt`
 * (`publish --deny-private-targets`). Signed, so that a leave taken away behind the engine's back (the flag
 * cleared in the table) is told from one the engine took away; a grant check never accepts it.
 */
export function signPrivateTargetsDenied(key: ChainKey, projectId: string, deniedAt: string): string {
  return signTimed('deny', key, deniedAt, (at) => `meshhook-private-targets\n${projectId}\nfalse\n${at}`);
}

/** When the engine took the leave away, as a denial's signature says; null when it is not a genuine denial. */
export function privateTargetsDeniedAt(keys: ChainKeys, projectId: string, signature: string | null): string | null {
  return timedSignatureAt('deny', keys, signature, (at) => `meshhook-private-targets\n${projectId}\nfalse\n${at}`);
}

/**
 * `removed:<kid>:<removedAt>:<hex>`: the engine removed vault secret `name` of a project at `removedAt` (its owner,
 * `secrets rm`). Signed over the project, the name and the time, so that a secret deleted behind the engine's back
 * (its row deleted by someone with the database, who has no key) is told from one its owner removed, and a
 * removal copied from another secret, another project or an earlier removal is not taken for this one.
 */
export function signSecretRemoved(key: ChainKey, projectId: string, name: string, removedAt: string): string {
  return signTimed('removed', key, removedAt, (at) => secretRemovedText(projectId, name, at));
}

/** When the engine removed the secret, as its removal record says; null when the record is not a genuine removal of it. */
export function secretRemovedAt(keys: ChainKeys, projectId: string, name: string, record: string | null): string | null {
  return timedSignatureAt('removed', keys, record, (at) => secretRemovedText(projectId, name, at));
}

/** `<prefix>:<kid>:<at>:<hex>`: something the engine did at `at`, signed over what `text` makes of the time. */
function signTimed(prefix: string, key: ChainKey, at: string, text: (at: string) => string): string {
  return `${prefix}:${key.kid}:${at}:${hmacSha256Hex(key.key, text(at))}`;
}

/** The time a `<prefix>:<kid>:<at>:<hex>` record says, when a key of the keyring signed it over `text`; else null. */
function timedSignatureAt(prefix: string, keys: ChainKeys, record: string | null, text: (at: string) => string): string | null {
  if (!record?.startsWith(`${prefix}:`)) return null;
  const rest = record.slice(prefix.length + 1);
  const first = rest.indexOf(':');
  const last = rest.lastIndexOf(':');
  if (first <= 0 || first === last) return null;
  const key = keys(rest.slice(0, first));
  if (!key) return null;
  const at = rest.slice(first + 1, last);
  return rest.slice(last + 1) === hmacSha256Hex(key, text(at)) ? at : null;
}

function secretRemovedText(projectId: string, name: string, removedAt: string): string {
  return `meshhook-secret-removed\n${projectId}\n${name}\n${removedAt}`;
}

/** Whether a project's leave to call private addresses was granted by the engine (a genuine signature). */
export function privateTargetsGranted(keys: ChainKeys, projectId: string, signature: string | null): boolean {
  return privateTargetsGrant(keys, projectId, signature).granted;
}

/**
 * `<kid>:<hex HMAC>` over a project's id and slug: the name the engine gave the project, so that a slug
 * changed or swapped by someone with the database does not send commands meant for one project to another.
 */
export function signProjectName(key: ChainKey, projectId: string, slug: string): string {
  return `${key.kid}:${hmacSha256Hex(key.key, `meshhook-project-name\n${projectId}\n${slug}`)}`;
}

/** What is wrong with a project's name (unsigned, or not the one the engine signed), or null when it is genuine. */
export function projectNameProblem(keys: ChainKeys, projectId: string, slug: string, signature: string | null): string | null {
  if (!signature) return `project "${slug}" (${projectId}) has no signed name: it was not made by this engine, or its signature was removed`;
  const { kid, key, mac } = signatureParts(keys, signature);
  if (!key) return `project "${slug}" (${projectId}) is named with a key this keyring does not hold (${kid.slice(0, 40) || 'no key id'})`;
  return mac === hmacSha256Hex(key, `meshhook-project-name\n${projectId}\n${slug}`)
    ? null
    : `project ${projectId} is called "${slug}" in the database, but that is not the name the engine gave it: its slug was changed behind the engine's back`;
}
