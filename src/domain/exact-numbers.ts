/*
 * JSON numbers past what a double holds. The engine reads every payload with JSON.parse, into doubles, and each link
 * of the hash chain covers the canonical JSON of what it read: so a number in a stored payload could be given other
 * digits, beyond the seventeenth, that read as the same double (an order id 1234567890123456800 recorded from a
 * response, made 1234567890123456801 in the table), and every link still held while whoever reads the table with
 * SQL (a dashboard, a reconciliation job, Supabase's own Realtime) was shown a number the engine never wrote. The
 * engine writes only numbers a double holds exactly as written, so a number that does not read back as its own
 * value was written outside the engine.
 */

const inexact = new WeakMap<object, string>();

/** a number with 16 or more digits somewhere in the text: only such a number can be more than a double holds */
const MANY_DIGITS = /[0-9.]{16}/;

/** JSON.parse, remembering (for inexactNumberOf) the first number of the text that is not the value it reads as. */
export function parseJsonExact(text: string): unknown {
  const value = JSON.parse(text);
  if (value !== null && typeof value === 'object' && MANY_DIGITS.test(text)) {
    const token = firstInexactNumber(text);
    if (token !== null) inexact.set(value, token);
  }
  return value;
}

/** The number of a value read by parseJsonExact that held more than a double does, or null. */
export function inexactNumberOf(value: unknown): string | null {
  return value !== null && typeof value === 'object' ? (inexact.get(value) ?? null) : null;
}

/** The first number in a JSON text (outside its strings) whose value is not the double it reads as; null when none. */
export function firstInexactNumber(text: string): string | null {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: skipped to its closing quote, escapes and all
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i += 2;
        else {
          i++;
          if (d === 0x22) break;
        }
      }
      continue;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (!((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d)) break;
      }
      const token = text.slice(i, j);
      // fifteen significant digits or fewer always read back as themselves
      if ((j - i >= 16 || /[eE]/.test(token)) && !sameValue(token, Number(token))) return token;
      i = j;
      continue;
    }
    i++;
  }
  return null;
}

/** Whether a JSON number's text is exactly the value of the double it reads as. */
function sameValue(token: string, read: number): boolean {
  if (!Number.isFinite(read)) return false;
  const a = decimal(token);
  const b = decimal(String(read));
  return a !== null && b !== null && a.negative === b.negative && a.digits === b.digits && a.exponent === b.exponent;
}

/** A decimal as sign, significant digits (no leading or trailing zeros) and the power of ten of its last digit. */
function decimal(s: string): { negative: boolean; digits: string; exponent: number } | null {
  const m = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(s);
  if (!m) return null;
  const whole = m[2] + (m[3] ?? '');
  let exponent = (m[4] ? Number(m[4]) : 0) - (m[3] ?? '').length;
  let digits = whole.replace(/^0+/, '');
  const trimmed = digits.replace(/0+$/, '');
  exponent += digits.length - trimmed.length;
  digits = trimmed;
  // zero is zero, whatever its sign or exponent
  if (digits === '') return { negative: false, digits: '', exponent: 0 };
  return { negative: m[1] === '-', digits, exponent };
}
