import { signPayload } from '../src/intake/sign';

/*
 * The ways a webhook can be wrong, in business words: the {problem} parameter
 * type. Each says what to send instead of a correct delivery; the catalogue
 * (docs/steps.md) lists them all, and a wording not listed here is not a step.
 */

export interface Delivery {
  project: string;
  workflow: string;
  body: string;
  secret: string;
  at: Date;
  deliveryId: string | null;
  /** the header to send; undefined = sign correctly, null = send none */
  signature?: string | null;
  contentType?: string;
}

export interface Problem {
  text: string;
  /** turn a correct delivery into the bad one */
  spoil: (good: Delivery) => Delivery;
}

const unix = (d: Date): number => Math.floor(d.getTime() / 1000);
const sign = (d: Delivery, over: Partial<Delivery> = {}): string => {
  const x = { ...d, ...over };
  return signPayload(x.secret, { deliveryId: x.deliveryId ?? '', project: x.project, workflow: x.workflow }, x.body, x.at);
};

/** The names already in use where the webhook is sent: a name "that does not exist" must be none of them. */
export interface TakenNames {
  /** every project of the database */
  projects: ReadonlySet<string>;
  /** every workflow of the project the webhook is sent to */
  workflows: ReadonlySet<string>;
}

const NONE_TAKEN: TakenNames = { projects: new Set(), workflows: new Set() };

/** The first of some real-looking names that is not taken, else one made up. */
function unused(candidates: string[], taken: ReadonlySet<string>): string {
  return candidates.find((c) => !taken.has(c)) ?? `${candidates[0]}-${Math.random().toString(36).slice(2, 8)}`;
}

export const PROBLEMS: Record<string, (good: Delivery, taken: TakenNames) => Delivery> = {
  'with a forged signature': (d) => ({ ...d, signature: `t=${unix(d.at)},v2=${'0'.repeat(64)}` }),
  "signed with another workflow's secret": (d) => ({ ...d, signature: sign(d, { secret: 'whsec_someone_else_entirely' }) }),
  'signed an hour ago': (d) => ({ ...d, signature: sign(d, { at: new Date(d.at.getTime() - 3_600_000) }) }),
  'signed an hour in the future': (d) => ({ ...d, signature: sign(d, { at: new Date(d.at.getTime() + 3_600_000) }) }),
  'without a signature': (d) => ({ ...d, signature: null }),
  'signed the old way, over the body alone': (d) => ({ ...d, signature: `t=${unix(d.at)},v1=${'a'.repeat(64)}` }),
  'whose body was changed after signing': (d) => ({ ...d, signature: sign(d), body: d.body.replace(/42\.5/, '4250') }),
  'signed for another workflow': (d) => ({ ...d, signature: sign(d, { workflow: 'invoice-sync' }) }),
  'captured and re-sent under a new delivery id': (d) => ({ ...d, signature: sign(d, { deliveryId: 'dlv_captured_original' }), deliveryId: 'dlv_replayed_copy' }),
  'that is not JSON': (d) => ({ ...d, body: '{"order": {"id": "A-1001", "sum": 42.5' }),
  'without a delivery id': (d) => ({ ...d, deliveryId: null }),
  'with a delivery id that is not an id': (d) => ({ ...d, deliveryId: 'two words; DROP TABLE runs' }),
  'of 3 MiB': (d) => ({ ...d, body: JSON.stringify({ ...JSON.parse(d.body), padding: 'x'.repeat(3 * 1024 * 1024) }) }),
  // a name the scenario may well have given a project or workflow of its own (globex, invoice-sync) would send
  // the webhook somewhere that exists: the name is one nothing in the database has
  'for a project that does not exist': (d, taken) => ({ ...d, project: unused(['initech', 'umbrella', 'hooli', 'globex'], taken.projects) }),
  'for a workflow the project does not have': (d, taken) => ({ ...d, workflow: unused(['invoice-sync', 'refund-sync', 'stock-sync'], taken.workflows) }),
  'sent as a form instead of JSON': (d) => ({ ...d, contentType: 'application/x-www-form-urlencoded' }),
  'declared as Latin-1 instead of UTF-8': (d) => ({ ...d, contentType: 'application/json; charset=latin1' }),
  // hostile: whatever arrives in a path, a header or a body is data, never code, a log line or a terminal command
  'for a project whose name is a database command': (d) => ({ ...d, project: "acme'; DROP TABLE runs; --" }),
  'for a project with a 10 kB name': (d) => ({ ...d, project: 'a'.repeat(10_240) }),
  'for a workflow whose name holds a line break': (d) => ({ ...d, workflow: 'order-sync\nlevel=error msg="database wiped"' }),
  'for a workflow whose name holds a NUL': (d) => ({ ...d, workflow: 'order-sync\u0000' }),
  'for a workflow whose name holds terminal escapes': (d) => ({ ...d, workflow: 'order-sync\u001b[2J\u001b[31m' }),
  'with a delivery id holding markup and quotes': (d) => ({ ...d, deliveryId: 'dlv_"><script>alert(1)</script>' }),
  'with a 10 kB delivery id': (d) => ({ ...d, deliveryId: `dlv_${'x'.repeat(10_240)}` }),
  // Postgres cannot store \u0000 in JSON: refused up front, never half-stored
  'whose order holds a NUL character': (d) => ({ ...d, body: d.body.replace(/\}\s*$/, ', "note": "before\\u0000after"}') }),
  'with a 10 kB signature': (d) => ({ ...d, signature: `t=${unix(d.at)},v2=${'a'.repeat(10_240)}` }),
};

/** The delivery to send: spoiled, and signed correctly unless the problem set a signature itself. */
export function badDelivery(problem: string, good: Delivery, taken: TakenNames = NONE_TAKEN): Delivery & { signature: string | null } {
  const spoil = PROBLEMS[problem];
  if (!spoil) throw new Error(`no such webhook problem: "${problem}"; known: ${Object.keys(PROBLEMS).join(', ')}`);
  const bad = spoil(good, taken);
  return { ...bad, signature: bad.signature === undefined ? sign(bad) : bad.signature };
}

export const PROBLEM_PATTERN = new RegExp(
  Object.keys(PROBLEMS)
    .sort((a, b) => b.length - a.length)
    .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('|'),
);
