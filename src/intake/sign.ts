import { createHmac, randomUUID } from 'node:crypto';

/*
 * Client side of the webhook signature (Stripe-style, with the delivery id
 * and the target inside the signed material, so a captured webhook cannot be
 * re-sent under a new delivery id or to another workflow):
 *   MeshHook-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, "<t>.<delivery id>.<project>/<workflow>.<raw body>")>
 */

export const SIGNATURE_HEADER = 'meshhook-signature';
export const DELIVERY_HEADER = 'meshhook-delivery';

export interface SignedTarget {
  deliveryId: string;
  project: string;
  workflow: string;
}

/** The hex HMAC over `<t>.<delivery id>.<project>/<workflow>.<raw body>` (the body as its exact bytes). */
export function computeSignature(secret: string, t: number, target: SignedTarget, rawBody: string | Buffer): string {
  const mac = createHmac('sha256', secret);
  mac.update(`${t}.${target.deliveryId}.${target.project}/${target.workflow}.`);
  mac.update(rawBody);
  return mac.digest('hex');
}

/** The MeshHook-Signature header value for a delivery sent at `at`. */
export function signPayload(secret: string, target: SignedTarget, rawBody: string | Buffer, at: Date): string {
  const t = Math.floor(at.getTime() / 1000);
  return `t=${t},v2=${computeSignature(secret, t, target, rawBody)}`;
}

export interface DeliverOptions {
  /** a fresh id by default; null sends no MeshHook-Delivery header */
  deliveryId?: string | null;
  /** signing time; now by default */
  at?: Date;
  /** send this header value instead of a correct signature (to test refusals); null sends none */
  signature?: string | null;
  /** content type to send; application/json by default */
  contentType?: string;
}

/** POST a signed webhook to the intake; never throws on an HTTP error status. */
export async function deliver(
  baseUrl: string,
  project: string,
  workflow: string,
  secret: string,
  body: string,
  opts: DeliverOptions = {},
): Promise<{ status: number; body: any }> {
  const deliveryId = opts.deliveryId === undefined ? `dlv_${randomUUID()}` : opts.deliveryId;
  const signature =
    opts.signature === undefined ? signPayload(secret, { deliveryId: deliveryId ?? '', project, workflow }, body, opts.at ?? new Date()) : opts.signature;
  const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/json' };
  if (signature !== null) headers['MeshHook-Signature'] = signature;
  if (deliveryId !== null) headers['MeshHook-Delivery'] = deliveryId;
  const url = `${baseUrl.replace(/\/+$/, '')}/hooks/${encodeURIComponent(project)}/${encodeURIComponent(workflow)}`;
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}
