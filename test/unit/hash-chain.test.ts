import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RecordedEvent } from '../../src/domain/events';
import { checkChain, eventHash, genesisHash, hmacSha256Hex, privateTargetsGrant, projectNameProblem, signPrivateTargets, signProjectName } from '../../src/domain/hash-chain';
import { created, orderSync, RUN_ID, simulate } from './fixtures';

const log = (): RecordedEvent[] => simulate(orderSync, [created()]);

describe('hash chain', () => {
  it('an untouched log checks out', () => {
    const events = log();
    assert.ok(events.length >= 10);
    assert.equal(checkChain(RUN_ID, events), null);
    assert.equal(events[0].prevHash, genesisHash(RUN_ID));
  });

  it('tampered content breaks the chain at that event', () => {
    const events = log();
    events[3] = { ...events[3], data: { ...(events[3].data as object), output: { id: 'o-1', total: 1_000_000 } } as never };
    assert.deepEqual(checkChain(RUN_ID, events), { seq: 4, reason: 'its content does not match its hash (edited after it was written)' });
  });

  it('a tampered event re-hashed to hide it breaks the chain at the next event', () => {
    const events = log();
    const data = { ...(events[3].data as object), output: 'forged' } as never;
    events[3] = { ...events[3], data, hash: eventHash(events[3].prevHash, { ...events[3], data }) };
    assert.deepEqual(checkChain(RUN_ID, events), { seq: 5, reason: 'its previous-hash does not match the event before it' });
  });

  it('a tampered recorded time breaks the chain too', () => {
    const events = log();
    events[1] = { ...events[1], recordedAt: '2031-01-01T00:00:00.000Z' };
    assert.equal(checkChain(RUN_ID, events)?.seq, 2);
  });

  it('reordered events are caught at the first one out of place', () => {
    const events = log();
    [events[2], events[3]] = [events[3], events[2]];
    assert.deepEqual(checkChain(RUN_ID, events), { seq: 3, reason: 'event 3 is missing from its place: event 4 comes next (deleted or moved)' });
  });

  it('a gap is caught where the missing event should be', () => {
    const events = log();
    events.splice(4, 1);
    assert.deepEqual(checkChain(RUN_ID, events), { seq: 5, reason: 'event 5 is missing from its place: event 6 comes next (deleted or moved)' });
  });

  it('reordered events renumbered to hide it still break the chain', () => {
    const events = log();
    const swapped = [events[0], { ...events[2], seq: 2 }, { ...events[1], seq: 3 }, ...events.slice(3)];
    assert.equal(checkChain(RUN_ID, swapped)?.seq, 2);
  });

  it('a log copied to another run fails at its first event', () => {
    assert.deepEqual(checkChain('00000000-0000-4000-8000-000000000000', log()), { seq: 1, reason: "it does not begin this run's chain: it was written for another run (moved, copied or swapped)" });
  });

  it('key order inside the payload does not change the hash', () => {
    const e = log()[0];
    const reordered = Object.fromEntries(Object.entries(e.data as object).reverse());
    assert.equal(eventHash(e.prevHash, { ...e, data: reordered }), e.hash);
  });

  describe('signed links (semantics 2)', () => {
    const key = Buffer.alloc(32, 7);
    const keys = (kid: string) => (kid === 'k1' ? key : null);
    const signed = (): RecordedEvent[] => {
      let prev = genesisHash(RUN_ID);
      return log().map((e) => {
        const hash = eventHash(prev, e, key);
        const out = { ...e, prevHash: prev, hash, kid: 'k1' };
        prev = hash;
        return out;
      });
    };

    it('a signed log checks out with the key, and not without it', () => {
      assert.equal(checkChain(RUN_ID, signed(), keys), null);
      assert.match(checkChain(RUN_ID, signed(), null)!.reason, /no keyring was given/);
      assert.match(checkChain(RUN_ID, signed(), () => null)!.reason, /not in the keyring/);
    });

    it('an edited event re-hashed with plain SHA-256 (all the database could do) is caught there', () => {
      const events = signed();
      const data = { ...(events[3].data as object), output: 'forged' } as never;
      let prev = events[2].hash;
      for (let i = 3; i < events.length; i++) {
        const e = { ...events[i], ...(i === 3 ? { data } : {}), prevHash: prev, kid: null };
        e.hash = eventHash(prev, e);
        events[i] = e;
        prev = e.hash;
      }
      assert.deepEqual(checkChain(RUN_ID, events, keys), { seq: 4, reason: 'it is not signed with the chain key (an event written from outside the engine)' });
    });

    it('a log re-hashed from the start without the key is caught when the run must be signed', () => {
      assert.match(checkChain(RUN_ID, log(), keys, { requireKeyed: true })!.reason, /not signed with the chain key/);
    });

    it('the project is part of a signed link: an event moved to another project fails', () => {
      const events = signed();
      events[0] = { ...events[0], project: '00000000-0000-4000-8000-00000000beef' };
      assert.equal(checkChain(RUN_ID, events, keys)?.seq, 1);
    });
  });

  describe("a project's signed name", () => {
    const key = { kid: 'k1', key: Buffer.alloc(32, 7) };
    const ring = (kid: string): Buffer | null => (kid === 'k1' ? key.key : null);
    const ACME = '00000000-0000-4000-8000-00000000ac3e';
    const GLOBEX = '00000000-0000-4000-8000-0000000091be';

    it('holds for the id and slug it was made for', () => {
      assert.equal(projectNameProblem(ring, ACME, 'acme', signProjectName(key, ACME, 'acme')), null);
    });

    it('fails for the same slug on another project, and for another slug on the same one (a swap)', () => {
      const sig = signProjectName(key, ACME, 'acme');
      assert.match(projectNameProblem(ring, GLOBEX, 'acme', sig)!, /is called "acme" in the database, but that is not the name the engine gave it/);
      assert.match(projectNameProblem(ring, ACME, 'globex', sig)!, /is called "globex"/);
    });

    it('is missing, or made with a key the keyring does not hold', () => {
      assert.match(projectNameProblem(ring, ACME, 'acme', null)!, /has no signed name/);
      assert.match(projectNameProblem(ring, ACME, 'acme', signProjectName({ kid: 'other', key: key.key }, ACME, 'acme'))!, /a key this keyring does not hold \(other\)/);
      assert.match(projectNameProblem(ring, ACME, 'acme', 'no-colon-at-all')!, /a key this keyring does not hold/);
    });
  });

  describe("a project's leave to call private addresses", () => {
    const key = { kid: 'k1', key: Buffer.alloc(32, 9) };
    const ring = (kid: string): Buffer | null => (kid === 'k1' ? key.key : null);
    const P = '00000000-0000-4000-8000-0000000000a1';
    const AT = '2026-12-07T06:30:00.000Z';

    it('carries when it was granted, and holds only for that time and project', () => {
      const sig = signPrivateTargets(key, P, AT);
      assert.deepEqual(privateTargetsGrant(ring, P, sig), { granted: true, grantedAt: AT });
      assert.equal(privateTargetsGrant(ring, P, sig.replace(AT, '2026-12-08T06:30:00.000Z')).granted, false, 'a grant made later by editing its time');
      assert.equal(privateTargetsGrant(ring, '00000000-0000-4000-8000-0000000000a2', sig).granted, false);
      assert.equal(privateTargetsGrant(ring, P, null).granted, false);
      assert.equal(privateTargetsGrant(ring, P, `k2${sig.slice(2)}`).granted, false, 'a key the keyring does not hold');
    });

    it('signed before grants carried their time, still holds, with no time', () => {
      const legacy = `k1:${hmacSha256Hex(key.key, `meshhook-private-targets\n${P}\ntrue`)}`;
      assert.deepEqual(privateTargetsGrant(ring, P, legacy), { granted: true, grantedAt: null });
    });
  });
});
