/*
 * What JSON.parse would quietly change in a text: a key given twice in one object, a number with more digits
 * than a double keeps. Used by the intake (a webhook body is refused) and the worker (an answer is kept as text).
 */

/** A JSON number, read where it starts (sticky). */
const NUMBER_TOKEN = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * What JSON.parse would quietly change, found in one pass over the text: a key given twice in one object (the
 * last one wins, while another reader of the same signed bytes may take the first), and a number with more
 * digits than a double keeps (0.10000000000000000001 would run as 0.1). Null when the value is the text.
 */
export function keptAsSent(text: string, parsedMembers: number): string | null {
  let members = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      // skip the string, escapes and all
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x3a /* : */) {
      members++;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      NUMBER_TOKEN.lastIndex = i;
      const token = NUMBER_TOKEN.exec(text)![0];
      if (!plainlyKept(token) && decimal(token) !== decimal(String(Number(token))))
        return `the body holds the number ${token.slice(0, 40)}, which has more digits than can be kept (it would become ${Number(token)}): send it as a string`;
      i += token.length - 1;
    }
  }
  return members === parsedMembers ? null : 'the body gives a key twice in one object: say each key once';
}

/**
 * A JSON number a double keeps exactly, known without the slow decimal check: at most 15 digits, and no exponent
 * or one well inside a double's normal range. The common case: `1e5` taking the slow check made 2 MiB of them
 * cost 2 s of the event loop the whole engine shares.
 */
export function plainlyKept(token: string): boolean {
  let e = token.indexOf('e');
  if (e < 0) e = token.indexOf('E');
  const mantissa = e < 0 ? token : token.slice(0, e);
  const digits = mantissa.length - (mantissa.charCodeAt(0) === 0x2d ? 1 : 0) - (mantissa.includes('.') ? 1 : 0);
  return digits <= 15 && (e < 0 || Math.abs(Number(token.slice(e + 1))) <= 280);
}

/** A decimal number's value as digits and a power of ten, the same however it is written (1.50, 15e-1, 1.5). */
function decimal(token: string): string {
  const negative = token.startsWith('-');
  const [mantissa, exponent = '0'] = token.replace(/^-/, '').split(/[eE]/);
  const [whole, fraction = ''] = mantissa.split('.');
  let digits = (whole + fraction).replace(/^0+/, '');
  let power = Number(exponent) - fraction.length;
  if (!digits) return '0';
  while (digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    power++;
  }
  return `${negative ? '-' : ''}${digits}e${power}`;
}

/** Whether a parsed JSON value nests objects or arrays deeper than `max` levels (walked without recursion). */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return false;
}
