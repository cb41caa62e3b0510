import type { ClientBase } from 'pg';
import { WebSocket } from 'ws';
import { decodeFrame, type PhxMessage, type Vsn } from './protocol';

/*
 * Test support for the realtime server (used by test/integration/realtime-*.test.ts):
 * a small Supabase-style schema, and a raw websocket client that sees exact frames.
 */

/**
 * Supabase conventions in a fresh database: NOLOGIN roles anon and authenticated, a run_events
 * table readable by `authenticated` under an RLS policy on the JWT's project_id, a table without
 * RLS, and the publication.
 */
export async function createRealtimeTestSchema(c: ClientBase, publication = 'supabase_realtime'): Promise<void> {
  await c.query(`
    DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
    END $$;
    CREATE TABLE public.run_events (
      project_id uuid NOT NULL,
      run_id     uuid NOT NULL,
      seq        int  NOT NULL,
      type       text NOT NULL,
      payload    jsonb NOT NULL DEFAULT '{}',
      hash       text NOT NULL DEFAULT '',
      recorded_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE public.items (
      id    int8 PRIMARY KEY,
      label text,
      tags  text[],
      done  boolean NOT NULL DEFAULT false,
      score numeric
    );
    GRANT USAGE ON SCHEMA public TO anon, authenticated;
    GRANT SELECT ON public.run_events, public.items TO authenticated;
    ALTER TABLE public.run_events ENABLE ROW LEVEL SECURITY;
    CREATE POLICY run_events_of_project ON public.run_events FOR SELECT TO authenticated
      USING (project_id = (current_setting('request.jwt.claims', true)::jsonb ->> 'project_id')::uuid);
    CREATE PUBLICATION ${publication} FOR TABLE public.run_events, public.items;
  `);
}

/** A raw websocket client speaking vsn 1.0.0 or 2.0.0 frames, for exact wire assertions. */
export class RawSocket {
  readonly frames: Array<PhxMessage | Buffer> = [];
  /** the text of every text frame, as received */
  readonly texts: string[] = [];
  closeCode: number | null = null;
  readonly closed: Promise<number>;
  private waiters: Array<() => void> = [];
  private ref = 0;

  private constructor(
    readonly ws: WebSocket,
    readonly vsn: Vsn,
  ) {
    this.closed = new Promise((resolve) => ws.on('close', (code) => ((this.closeCode = code), resolve(code), this.wakeAll())));
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      if (isBinary) this.frames.push(buf);
      else {
        this.texts.push(buf.toString('utf8'));
        this.frames.push(decodeFrame(vsn, buf, false));
      }
      this.wakeAll();
    });
    ws.on('error', () => undefined);
  }

  static async open(baseUrl: string, params: Record<string, string>, vsn: Vsn = '2.0.0'): Promise<RawSocket> {
    const u = new URL('/realtime/v1/websocket', baseUrl.replace(/^http/, 'ws'));
    for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
    u.searchParams.set('vsn', vsn);
    const ws = new WebSocket(u);
    const s = new RawSocket(ws, vsn);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once('error', reject);
    });
    return s;
  }

  nextRef(): string {
    return String(++this.ref);
  }

  send(msg: PhxMessage): void {
    if (this.vsn === '2.0.0') this.ws.send(JSON.stringify([msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload]));
    else this.ws.send(JSON.stringify({ topic: msg.topic, event: msg.event, payload: msg.payload, ref: msg.ref, ...(msg.join_ref ? { join_ref: msg.join_ref } : {}) }));
  }

  /** a text frame as given (a frame JSON.stringify could not write, say) */
  sendText(text: string): void {
    this.ws.send(text);
  }

  sendBinary(buf: Buffer): void {
    this.ws.send(buf, { binary: true });
  }

  /** send a join and return its reply */
  async join(topic: string, payload: Record<string, unknown>, timeoutMs = 5000): Promise<{ joinRef: string; reply: PhxMessage }> {
    const ref = this.nextRef();
    this.send({ join_ref: ref, ref, topic, event: 'phx_join', payload });
    const reply = await this.next((m) => m.event === 'phx_reply' && m.ref === ref, timeoutMs);
    return { joinRef: ref, reply };
  }

  /** the first frame from `from` on matching the predicate (waits for it) */
  async next(pred: (m: PhxMessage) => boolean, timeoutMs = 5000, from = 0): Promise<PhxMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.slice(from).find((f): f is PhxMessage => !Buffer.isBuffer(f) && pred(f));
      if (hit) return hit;
      if (this.closeCode !== null) throw new Error(`socket closed (${this.closeCode}) before the expected frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms; frames: ${JSON.stringify(this.frames.slice(-10))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  messages(pred: (m: PhxMessage) => boolean = () => true): PhxMessage[] {
    return this.frames.filter((f): f is PhxMessage => !Buffer.isBuffer(f) && pred(f));
  }

  close(): void {
    this.ws.terminate();
  }

  private wakeAll(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
