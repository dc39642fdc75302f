import { createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { AuthConfig } from '../config.ts';
import { isUserId } from '../domain/coupon.ts';

export type IdentityResult = { kind: 'user'; userId: string } | { kind: 'rejected'; message: string };

/** Who is applying. With JWT configured it is the token's `sub`; a made-up userId in the body gets nowhere. */
export interface Identity {
  readonly required: boolean;
  /** The token's user, or why it was refused; throws KeySetUnavailableError when the key set cannot be had. */
  resolve(authorization: string | undefined): Promise<IdentityResult>;
}

/**
 * The identity provider's key set could not be fetched (down, too slow, not a key set): the server's fault, not
 * the token's, so the api answers 503 `unavailable` and the client retries. Named as a connection fault, the
 * name src/dependency-faults.ts already maps to 503 (the class name still shows in the logs).
 */
export class KeySetUnavailableError extends Error {
  override name = 'ConnectionException';
  constructor(cause: unknown) {
    super('the identity provider\'s key set could not be fetched', { cause });
  }
}

/** A JWKS fetch waits at most this long (jose's default is 5 s): an apply should not hang on the identity provider. */
const JWKS_TIMEOUT_MS = 2_000;
/** What the key set can say about a token itself: no key (or several keys) fits it, or its algorithm is not one a key set serves. */
const TOKEN_FAULTS = new Set([errors.JWKSNoMatchingKey.code, errors.JWKSMultipleMatchingKeys.code, errors.JOSENotSupported.code]);

export function createIdentity(auth: AuthConfig | undefined): Identity | undefined {
  if (!auth) return undefined;
  const key: Uint8Array | JWTVerifyGetKey = auth.kind === 'secret' ? new TextEncoder().encode(auth.secret) : remoteKeySet(auth.jwksUrl);
  const options = {
    algorithms: auth.kind === 'secret' ? ['HS256'] : ['RS256', 'ES256'],
    // A token without an expiry would be good for ever.
    requiredClaims: ['exp'],
    ...(auth.audience && { audience: auth.audience }),
    ...(auth.issuer && { issuer: auth.issuer }),
  };
  return {
    required: true,
    async resolve(authorization) {
      const token = authorization?.startsWith('Bearer ') ? authorization.slice(7).trim() : undefined;
      if (!token) return { kind: 'rejected', message: 'a bearer token is required' };
      try {
        const { payload } = await jwtVerify(token, key as Uint8Array, options);
        if (typeof payload.sub !== 'string' || !isUserId(payload.sub)) {
          return { kind: 'rejected', message: 'the token has no usable subject' };
        }
        return { kind: 'user', userId: payload.sub };
      } catch (error) {
        if (error instanceof KeySetUnavailableError) throw error;
        return { kind: 'rejected', message: 'the token is invalid or expired' };
      }
    },
  };
}

/**
 * The keys of AUTH_JWKS_URL, cached per process as jose's createRemoteJWKSet does by default: fetched on the first
 * token, kept 10 minutes (cacheMaxAge; the first token after that fetches again, and a failed fetch then fails
 * every token until one succeeds: stale keys are not used), fetched again early only for a token whose `kid` is
 * not in the set and at most once per 30 s (cooldownDuration). Concurrent fetches are one request.
 *
 * jose's key getter throws both for a token no key fits (the token's fault: 401) and for a fetch that failed (a
 * refused connection, a timeout, a status other than 200, a body that is no JSON or no key set: the server's
 * fault, 503). Only the first kind names the token; everything else is the key set being unavailable.
 */
function remoteKeySet(jwksUrl: string): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: JWKS_TIMEOUT_MS });
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      if (error instanceof errors.JOSEError && TOKEN_FAULTS.has(error.code)) throw error;
      throw new KeySetUnavailableError(error);
    }
  };
}
