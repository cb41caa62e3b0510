/*
 * Secret values must never reach the run log, a live log, a worker's log or a
 * report. The worker redacts every answer and error message it records of
 * every secret value of the run's project, in the forms a value travels in:
 * as is, base64 (standard and URL-safe, also when it sits inside a longer
 * base64 text), URL-encoded, JSON-escaped (also as PHP and Python escape) and HTML-escaped. The suite's leak check looks
 * for the same forms (findIn).
 */

export interface SecretValue {
  name: string;
  value: string;
}

/** Shorter values cannot be told apart from ordinary text; the vault refuses them. */
export const MIN_SECRET_LENGTH = 8;
/** Forms shorter than this would match by chance. */
const MIN_FORM_LENGTH = 8;

/** The base64 characters of `bytes` that do not depend on what surrounds it in a longer base64 text. */
function stableBase64(bytes: Buffer): string[] {
  const out: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const padded = Buffer.concat([Buffer.alloc(offset), bytes]);
    const full = Math.floor(padded.length / 3) * 4;
    // the first group mixes in the unknown bytes before the value (unless it starts a group)
    const start = offset === 0 ? 0 : 4;
    const text = padded.toString('base64').slice(start, full);
    if (text.length >= MIN_FORM_LENGTH) out.push(text);
  }
  // standing alone, with its padding
  out.push(bytes.toString('base64'));
  return out;
}

/** Every form of a value worth looking for, longest first. */
export function formsOf(value: string): string[] {
  const forms = new Set<string>([value]);
  const bytes = Buffer.from(value, 'utf8');
  for (const b of stableBase64(bytes)) {
    forms.add(b);
    forms.add(b.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
  }
  forms.add(encodeURIComponent(value));
  forms.add(encodeURIComponent(value).replace(/%20/g, '+'));
  const json = JSON.stringify(value).slice(1, -1);
  forms.add(json);
  // as other serializers write a JSON string: PHP's json_encode escapes "/" (an AWS-style key is full of them), and
  // Python's json.dumps writes every character past ASCII as \u00e4; and as an HTML page writes text. A target's
  // error page or echo in any of these, answered as text (or cut short, so not parsed), kept the secret whole
  const ascii = (t: string, upper: boolean): string =>
    t.replace(/[\u0080-\uffff]/g, (c) => `\\u${(upper ? c.charCodeAt(0).toString(16).toUpperCase() : c.charCodeAt(0).toString(16)).padStart(4, '0')}`);
  for (const j of [json, json.replace(/\//g, '\\/')]) {
    forms.add(j);
    forms.add(ascii(j, false));
    forms.add(ascii(j, true));
  }
  const html = value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  forms.add(html);
  forms.add(html.replace(/"/g, '&quot;').replace(/'/g, '&#39;'));
  forms.add(html.replace(/"/g, '&quot;').replace(/'/g, '&#x27;'));
  // A header carries a value as Latin-1, one byte a character, not as UTF-8: a secret such as "pässwörd-…" reaches the
  // target as the bytes 70 e4 73 73 …, and a target that echoes them is read back as UTF-8, each of those bytes a
  // U+FFFD and every other character as is ("p\uFFFDssw\uFFFDrd-…", recorded in full before this form was sought)
  if (/[\u0080-\u00ff]/.test(value) && !/[^\u0000-\u00ff]/.test(value)) {
    const latin1 = Buffer.from(value, 'latin1');
    forms.add(latin1.toString('utf8'));
    for (const b of stableBase64(latin1)) {
      forms.add(b);
      forms.add(b.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
    }
    forms.add([...latin1].map((c) => (/[A-Za-z0-9\-_.!~*'()]/.test(String.fromCharCode(c)) ? String.fromCharCode(c) : `%${c.toString(16).toUpperCase().padStart(2, '0')}`)).join(''));
  }
  return [...forms].filter((f) => f.length >= Math.min(MIN_FORM_LENGTH, value.length)).sort((a, b) => b.length - a.length);
}

/** Whether text from `from` to its end is the start of `form` (compared in place: secrets are up to 8 kB). */
function startsAt(form: string, text: string, from: number): boolean {
  for (let i = from; i < text.length; i++) if (text.charCodeAt(i) !== form.charCodeAt(i - from)) return false;
  return true;
}

export class Redactor {
  private readonly patterns: Array<{ form: string; name: string }>;

  constructor(secrets: readonly SecretValue[]) {
    const patterns: Array<{ form: string; name: string }> = [];
    for (const s of secrets) {
      if (!s.value) continue;
      for (const form of formsOf(s.value)) patterns.push({ form, name: s.name });
    }
    this.patterns = patterns.sort((a, b) => b.form.length - a.form.length);
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  redactText(text: string): string {
    if (this.patterns.length === 0 || !text) return text;
    let out = text;
    for (const { form, name } of this.patterns) if (out.includes(form)) out = out.split(form).join(`[redacted:${name}]`);
    return out;
  }

  /**
   * A text that was cut short (an answer over the size kept), redacted, and with any start of a secret it ends in taken
   * off too: a cut falling inside an echoed secret left its first characters, which redactText does not seek (an
   * echo service puts the request's body before its headers, so whoever sends a webhook could choose where the cut
   * falls, and read all of the secret but its last character over a few runs). Starts of under three characters are
   * left (they would take most cut answers' last characters for a secret's).
   */
  redactCutText(text: string): string {
    let out = this.redactText(text);
    if (this.patterns.length === 0) return out;
    // a cut inside a character of several bytes leaves a U+FFFD after what was whole
    const whole = out.replace(/\uFFFD+$/, '');
    let cutAt = -1;
    let name = '';
    for (const { form, name: n } of this.patterns) {
      // the earliest place the text's tail is a proper start of this form
      for (let from = Math.max(0, whole.length - form.length + 1); from <= whole.length - 3; from++) {
        if (cutAt !== -1 && from >= cutAt) break;
        if (whole.charCodeAt(from) === form.charCodeAt(0) && startsAt(form, whole, from)) {
          cutAt = from;
          name = n;
          break;
        }
      }
    }
    if (cutAt !== -1) out = `${whole.slice(0, cutAt)}[redacted:${name}, cut]`;
    return out;
  }

  /** A JSON value with every string (keys too) redacted. */
  redactJson<T>(value: T): T {
    if (this.patterns.length === 0) return value;
    const walk = (v: unknown): unknown => {
      if (typeof v === 'string') return this.redactText(v);
      if (Array.isArray(v)) return v.map(walk);
      // (made as fromEntries makes it: an answer's key "__proto__" assigned to a plain object set its prototype, and
      // was left out of what was recorded, whenever the project had a secret)
      if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [this.redactText(k), walk(x)]));
      return v;
    };
    return walk(value) as T;
  }

  /** Which secrets appear in a text, and in which form. */
  findIn(text: string): Array<{ name: string; form: string }> {
    const hits: Array<{ name: string; form: string }> = [];
    for (const { form, name } of this.patterns) if (text.includes(form)) hits.push({ name, form });
    return hits;
  }
}
