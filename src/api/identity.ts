import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { AuthConfig } from '../config.ts';
import { isUserId } from '../domain/coupon.ts';

export type IdentityResult = { kind: 'user'; userId: string } | { kind: 'rejected'; message: string };

/** Who is applying. With JWT configured it is the token's `sub`; a made-up userId in the body gets nowhere. */
export interface Identity {
  readonly required: boolean;
  resolve(authorization: string | undefined): Promise<IdentityResult>;
}

export function createIdentity(auth: AuthConfig | undefined): Identity | undefined {
  if (!auth) return undefined;
  const key: Uint8Array | JWTVerifyGetKey = auth.kind === 'secret'
    ? new TextEncoder().encode(auth.secret)
    : createRemoteJWKSet(new URL(auth.jwksUrl), { cacheMaxAge: 10 * 60_000, timeoutDuration: 2_000 });
  const options = {
    algorithms: auth.kind === 'secret' ? ['HS256'] : ['RS256', 'ES256'],
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
      } catch {
        return { kind: 'rejected', message: 'the token is invalid or expired' };
      }
    },
  };
}
