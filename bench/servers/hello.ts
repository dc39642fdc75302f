/**
 * The ceiling: a bare Koa route on the apply path that answers 202 at once. No body parsing, no Redis, no MySQL.
 * Every design's throughput is reported as a fraction of this one, measured on the same process setup in the same run.
 */
import { createBenchApp, listen } from './common.ts';

const app = createBenchApp((router) => {
  router.post('/v1/events/:eventId/apply', (ctx) => {
    ctx.status = 202;
    ctx.body = { status: 'issued', sequence: 1 };
  });
}, { parseBody: false });
listen(app);
