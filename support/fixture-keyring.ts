import { createHash } from 'node:crypto';
import { Keyring } from '../src/security/keyring';

/**
 * The key the recorded histories under features/fixtures/histories were
 * signed with. It guards nothing (it is in the repository); it only lets their
 * hash chains be checked like any installation's.
 */
export const FIXTURE_KEYRING = new Keyring([{ id: 'fixtures', key: createHash('sha256').update('meshhook-replay fixtures: not a secret').digest() }]);
