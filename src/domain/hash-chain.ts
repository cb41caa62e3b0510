import { canonicalJson, sha256 } from './canonical';

/** The hash before event 1: tied to the run so events cannot be moved between runs. */
export function genesisHash(runId: string): string {
  return sha256(`meshhook-replay:genesis:${runId}`);
}

export interface HashedContent {
  runId: string;
  seq: number;
  type: string;
  version: number;
  data: unknown;
  recordedAt: string;
}

/** Each hash covers the previous hash and the event's own canonical content. */
export function eventHash(prevHash: string, content: HashedContent): string {
  return sha256(
    prevHash +
      '\n' +
      canonicalJson({
        runId: content.runId,
        seq: content.seq,
        type: content.type,
        version: content.version,
        data: content.data,
        recordedAt: content.recordedAt,
      }),
  );
}

export interface ChainBreak {
  seq: number;
  reason: string;
}

export function checkChain(
  runId: string,
  events: ReadonlyArray<HashedContent & { prevHash: string; hash: string }>,
): ChainBreak | null {
  let prev = genesisHash(runId);
  for (const [i, e] of events.entries()) {
    if (e.seq !== i + 1) return { seq: e.seq, reason: `expected event number ${i + 1}, found ${e.seq}` };
    if (e.prevHash !== prev) return { seq: e.seq, reason: 'its previous-hash does not match the event before it' };
    const expected = eventHash(prev, e);
    if (e.hash !== expected) return { seq: e.seq, reason: 'its content does not match its hash (edited after it was written)' };
    prev = e.hash;
  }
  return null;
}
