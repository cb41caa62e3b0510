import path from 'node:path';
import { Keyring } from '../src/security/keyring';

/**
 * The key the recorded histories under features/fixtures/histories were
 * linked with, from features/fixtures/keyring.json (the file
 * `meshhook export-history --sign-with` takes). It guards nothing; it only lets
 * their hash chains be checked like any installation's.
 */
export const FIXTURE_KEY_FILE = path.resolve(__dirname, '..', 'features', 'fixtures', 'keyring.json');
export const FIXTURE_KEYRING = Keyring.fromFile(FIXTURE_KEY_FILE);
