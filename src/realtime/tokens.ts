import { SignJWT, compactVerify, decodeJwt, decodeProtectedHeader, errors as joseErrors } from 'jose';

/*
 * Supabase-style JWTs, HS256 with one shared secret (the project's JWT secret).
 *
 *   signProjectToken  → { role: 'authenticated', project_id, iat, exp }: what a live-log client joins with
 *   signAnonKey       → { role: 'anon', iss, iat, exp (10 years) }: the apikey every socket presents
 *   verifyToken       → the claims, or a TokenError whose `reason` is the string the real Realtime
 *                       server puts in a refused join (see src/realtime/README.md)
 */

export interface TokenClaims {
  role: string;
  exp: number;
  iat?: number;
  project_id?: string;
  [claim: string]: unknown;
}

export type TokenErrorCode = 'MalformedJWT' | 'JwtSignatureError' | 'InvalidJWTToken';

export class TokenError extends Error {
  readonly code: TokenErrorCode;
  /** the Supabase reason string, e.g. "InvalidJWTToken: Token has expired 12 seconds ago" */
  readonly reason: string;
  constructor(code: TokenErrorCode, text: string) {
    super(`${code}: ${text}`);
    this.name = 'TokenError';
    this.code = code;
    this.reason = `${code}: ${text}`;
  }
}

const ALGORITHMS = ['HS256', 'HS384', 'HS512'];
const TEN_YEARS_SEC = 10 * 365 * 24 * 3600;

function key(secret: string): Uint8Array {
  if (!secret) throw new Error('a JWT secret is required');
  return new TextEncoder().encode(secret);
}

function nowSec(now: number): number {
  return Math.floor(now / 1000);
}

export async function signToken(secret: string, claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(key(secret));
}

/** A user token scoped to one project: RLS policies read `project_id` from `request.jwt.claims`. */
export async function signProjectToken(opts: {
  secret: string;
  projectId: string;
  /** seconds until expiry; negative gives an already expired token (tests) */
  ttlSec: number;
  role?: string;
  /** extra claims (e.g. sub) */
  claims?: Record<string, unknown>;
  now?: number;
}): Promise<string> {
  const iat = nowSec(opts.now ?? Date.now());
  return signToken(opts.secret, {
    ...opts.claims,
    role: opts.role ?? 'authenticated',
    project_id: opts.projectId,
    iat,
    exp: iat + opts.ttlSec,
  });
}

/** The anon key: role anon, long-lived. Every socket presents it as `apikey`. */
export async function signAnonKey(opts: { secret: string; ttlSec?: number; now?: number }): Promise<string> {
  const iat = nowSec(opts.now ?? Date.now());
  return signToken(opts.secret, { iss: 'meshhook', role: 'anon', iat, exp: iat + (opts.ttlSec ?? TEN_YEARS_SEC) });
}

/**
 * Verify an HS256/384/512 JWT the way Realtime does for the apikey and for channel tokens:
 * signature first, then `exp` in the future, then the claims `role` and `exp` present
 * (and `iat` numeric when present).
 */
export async function verifyToken(secret: string, token: string, now: number = Date.now()): Promise<TokenClaims> {
  if (typeof token !== 'string' || token.split('.').length !== 3) {
    throw new TokenError('MalformedJWT', 'The token provided is not a valid JWT');
  }
  let alg: string | undefined;
  let claims: Record<string, unknown>;
  try {
    alg = decodeProtectedHeader(token).alg;
    claims = decodeJwt(token) as Record<string, unknown>;
  } catch {
    throw new TokenError('MalformedJWT', 'The token provided is not a valid JWT');
  }
  if (!alg || !ALGORITHMS.includes(alg)) throw new TokenError('JwtSignatureError', 'Failed to validate JWT signature');
  try {
    await compactVerify(token, key(secret), { algorithms: ALGORITHMS });
  } catch (e) {
    if (e instanceof joseErrors.JWSInvalid) throw new TokenError('MalformedJWT', 'The token provided is not a valid JWT');
    throw new TokenError('JwtSignatureError', 'Failed to validate JWT signature');
  }
  const exp = claims.exp;
  if (typeof exp === 'number' && exp <= now / 1000) {
    throw new TokenError('InvalidJWTToken', `Token has expired ${Math.max(0, Math.floor(now / 1000 - exp))} seconds ago`);
  }
  if (typeof claims.role !== 'string' || !claims.role || typeof exp !== 'number') {
    throw new TokenError('InvalidJWTToken', 'Fields `role` and `exp` are required in JWT');
  }
  if (claims.iat !== undefined && typeof claims.iat !== 'number') {
    throw new TokenError('InvalidJWTToken', 'Fields `iat` must be a number');
  }
  // a token that says when it starts to count does not count before then (RFC 7519 4.1.5)
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > now / 1000)) {
    throw new TokenError('InvalidJWTToken', 'Token is not valid yet (nbf)');
  }
  return claims as TokenClaims;
}

/** ms until the token expires (negative when it already has) */
export function msUntilExpiry(claims: TokenClaims, now: number = Date.now()): number {
  return claims.exp * 1000 - now;
}
