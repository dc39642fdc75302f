import type { Context } from 'koa';
import type { Router } from '@koa/router';
import { isUserId } from '../../domain/coupon.ts';
import type { EventService } from '../../event-service.ts';
import { HttpError } from '../errors.ts';
import type { Identity } from '../identity.ts';
import { adminCheck } from './events.ts';

/**
 * A user's coupons across events. With JWT identity configured only the token's subject reads its own (the admin
 * token reads anyone's); without it, as the per-event coupon read, anyone may ask.
 */
export function userRoutes(router: Router, deps: { events: EventService; adminToken: string | undefined; identity: Identity | undefined }): void {
  const isAdmin = adminCheck(deps.adminToken);
  router.get('/v1/users/:userId/coupons', async (ctx: Context) => {
    const userId = ctx.params.userId as string;
    if (!isUserId(userId)) throw new HttpError('invalid_request', 'userId must be 1-64 of [A-Za-z0-9_-]');
    if (deps.identity && !isAdmin(ctx)) {
      const who = await deps.identity.resolve(ctx.get('authorization') || undefined);
      if (who.kind === 'rejected') throw new HttpError('unauthorized', who.message);
      if (who.userId !== userId) throw new HttpError('forbidden', 'a token reads only its own subject\'s coupons');
    }
    ctx.body = { userId, coupons: await deps.events.couponsOfUser(userId) };
  });
}
