/*
 * Phoenix framing as supabase-js speaks it (src/realtime/README.md).
 *
 *   vsn 1.0.0  text frames, JSON objects {topic, event, payload, ref, join_ref?};
 *              the server's objects carry no join_ref (Phoenix's V1 serializer)
 *   vsn 2.0.0  text frames, JSON arrays [join_ref, ref, topic, event, payload];
 *              binary kind 3 (client broadcast push) in, binary kind 4 (broadcast) out
 */

export type Vsn = '1.0.0' | '2.0.0';

export interface PhxMessage {
  join_ref: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: any;
}

/** the user payload of a binary broadcast whose encoding was raw bytes (kind 3, encoding 0) */
export interface RawBroadcast {
  event: string;
  meta: Record<string, unknown> | null;
  bytes: Buffer;
}

export class FrameError extends Error {}

/** `vsn` query value → a supported version, or null (refuse the connection) */
export function negotiateVsn(vsn: string | null): Vsn | null {
  if (vsn === null || vsn === '') return '1.0.0';
  if (/^1\.0(\.\d+)?$/.test(vsn)) return '1.0.0';
  if (/^2\.0(\.\d+)?$/.test(vsn)) return '2.0.0';
  return null;
}

const KIND_USER_BROADCAST_PUSH = 3;
const KIND_USER_BROADCAST = 4;
const ENCODING_BINARY = 0;
const ENCODING_JSON = 1;

function str(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  return String(v);
}

/**
 * Decode one client frame. A binary kind-3 frame becomes an ordinary `broadcast`
 * message whose payload is {type:'broadcast', event, payload, meta?}; with raw-byte
 * encoding, payload.payload is a Buffer and `raw` is set.
 */
export function decodeFrame(vsn: Vsn, data: Buffer | string, isBinary: boolean): PhxMessage & { raw?: RawBroadcast } {
  if (isBinary) {
    if (vsn !== '2.0.0') throw new FrameError('binary frames need vsn 2.0.0');
    return decodeBroadcastPush(Buffer.isBuffer(data) ? data : Buffer.from(data));
  }
  const text = typeof data === 'string' ? data : data.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FrameError('frame is not JSON');
  }
  if (vsn === '2.0.0') {
    if (!Array.isArray(parsed) || parsed.length !== 5) throw new FrameError('vsn 2.0.0 frames are 5-element arrays');
    const [join_ref, ref, topic, event, payload] = parsed;
    if (typeof topic !== 'string' || typeof event !== 'string') throw new FrameError('topic and event must be strings');
    return { join_ref: str(join_ref), ref: str(ref), topic, event, payload: payload ?? {} };
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new FrameError('vsn 1.0.0 frames are JSON objects');
  const o = parsed as Record<string, unknown>;
  if (typeof o.topic !== 'string' || typeof o.event !== 'string') throw new FrameError('topic and event must be strings');
  return { join_ref: str(o.join_ref), ref: str(o.ref), topic: o.topic, event: o.event, payload: o.payload ?? {} };
}

function decodeBroadcastPush(buf: Buffer): PhxMessage & { raw?: RawBroadcast } {
  if (buf.length < 7 || buf[0] !== KIND_USER_BROADCAST_PUSH) throw new FrameError(`unsupported binary frame kind ${buf[0]}`);
  const lens = [buf[1], buf[2], buf[3], buf[4], buf[5]];
  const encoding = buf[6];
  let offset = 7;
  const parts: string[] = [];
  for (const n of lens) {
    if (offset + n > buf.length) throw new FrameError('truncated binary frame');
    parts.push(buf.subarray(offset, offset + n).toString('utf8'));
    offset += n;
  }
  const [joinRef, ref, topic, userEvent, metaText] = parts;
  const body = buf.subarray(offset);
  let meta: Record<string, unknown> | null = null;
  if (metaText) {
    try {
      meta = JSON.parse(metaText);
    } catch {
      throw new FrameError('binary frame meta is not JSON');
    }
  }
  const inner: Record<string, unknown> = { type: 'broadcast', event: userEvent };
  let raw: RawBroadcast | undefined;
  if (encoding === ENCODING_JSON) {
    try {
      inner.payload = body.length ? JSON.parse(body.toString('utf8')) : {};
    } catch {
      throw new FrameError('binary frame payload is not JSON');
    }
  } else if (encoding === ENCODING_BINARY) {
    inner.payload = Buffer.from(body);
    raw = { event: userEvent, meta, bytes: Buffer.from(body) };
  } else {
    throw new FrameError(`unknown payload encoding ${encoding}`);
  }
  if (meta) inner.meta = meta;
  return { join_ref: joinRef || null, ref: ref || null, topic, event: 'broadcast', payload: inner, raw };
}

/** Encode a server frame as text. */
export function encodeFrame(vsn: Vsn, msg: PhxMessage): string {
  if (vsn === '2.0.0') return JSON.stringify([msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload]);
  return JSON.stringify({ topic: msg.topic, event: msg.event, payload: msg.payload, ref: msg.ref });
}

/** Binary kind 4 (server → client broadcast), used only for raw-byte payloads under vsn 2. */
export function encodeBroadcastBinary(topic: string, userEvent: string, payload: Buffer, meta: Record<string, unknown> | null): Buffer {
  const t = Buffer.from(topic, 'utf8');
  const e = Buffer.from(userEvent, 'utf8');
  const m = Buffer.from(meta ? JSON.stringify(meta) : '', 'utf8');
  if (t.length > 255 || e.length > 255 || m.length > 255) throw new FrameError('topic, event and meta must be ≤ 255 bytes');
  return Buffer.concat([Buffer.from([KIND_USER_BROADCAST, t.length, e.length, m.length, ENCODING_BINARY]), t, e, m, payload]);
}

/** A kind-3 frame as the client builds it (tests use it to speak binary without supabase-js). */
export function encodeBroadcastPush(opts: {
  joinRef: string;
  ref: string;
  topic: string;
  event: string;
  payload: unknown;
  meta?: Record<string, unknown>;
}): Buffer {
  const parts = [opts.joinRef, opts.ref, opts.topic, opts.event, opts.meta ? JSON.stringify(opts.meta) : ''].map((s) => Buffer.from(s, 'utf8'));
  const isRaw = Buffer.isBuffer(opts.payload);
  const body = isRaw ? (opts.payload as Buffer) : Buffer.from(JSON.stringify(opts.payload ?? {}), 'utf8');
  return Buffer.concat([
    Buffer.from([KIND_USER_BROADCAST_PUSH, ...parts.map((p) => p.length), isRaw ? ENCODING_BINARY : ENCODING_JSON]),
    ...parts,
    body,
  ]);
}

export function reply(req: { join_ref: string | null; ref: string | null; topic: string }, status: 'ok' | 'error', response: unknown): PhxMessage {
  return { join_ref: req.join_ref, ref: req.ref, topic: req.topic, event: 'phx_reply', payload: { status, response } };
}
