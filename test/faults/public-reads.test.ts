/**
 * Public reads during a sale stay off the shared MySQL (issue 9.1): storefronts poll the event ("coupons left") and
 * each holder's coupon. Counted on a MySQL of this file's own, with no worker running while the reads happen, so
 * every statement MySQL executes in that window is one the reads caused.
 */
import { createEvent, request, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, users } from '../support/load.ts';
import { countRows, recordFigures } from '../support/observe.ts';

const TOTAL = 500;
const READS = 4_000;

describeFault('public reads', { folder: 'public-reads' }, (stack) => {
  test('when 4,000 public reads hit events and coupons, then MySQL runs at most 2% as many statements, and the answers are right', async () => {
    const [api, other] = [await stack.spawnApi(), await stack.spawnApi()];
    const worker = await stack.spawnWorker();
    const eventId = uniqueEventId('reads');
    await createEvent(api.url, { id: eventId, totalQuantity: TOTAL });
    const answers = await applyLoad({ urls: () => [api.url], eventId, users: users('h', 400), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 400 || undefined, { what: 'the 400 coupons persisted' });
    await worker.stop('SIGTERM');
    // 50 more, still in the outbox: their holders read "pending".
    const pending = await applyLoad({ urls: () => [api.url], eventId, users: users('p', 50), concurrency: 8 });

    const statements = async () => {
      const [row] = await stack.query<{ Value: string }>("show global status like 'Questions'");
      return Number(row?.Value);
    };
    const before = await statements();
    let reads = 0;
    const wrong: string[] = [];
    const read = async (i: number) => {
      const url = i % 2 === 0 ? api.url : other.url;
      if (i % 4 < 2) {
        const event = await request<{ issued: number; persisted: number; status: string }>(`${url}/v1/events/${eventId}`);
        if (event.status !== 200 || event.body.issued !== 450 || event.body.persisted !== 400) wrong.push(`event ${JSON.stringify(event.body)}`);
      } else if (i % 8 === 2) {
        // A made-up event and a user with no coupon: cheap too.
        const unknown = await request(`${url}/v1/events/${uniqueEventId('none')}/coupons/nobody`);
        const nobody = await request(`${url}/v1/events/${eventId}/coupons/nobody-${i}`);
        if (unknown.status !== 404 || nobody.status !== 404) wrong.push(`404s ${unknown.status} ${nobody.status}`);
        reads += 1;
      } else {
        const holder = i % 16 === 3 ? pending[i % pending.length]! : answers[i % answers.length]!;
        const coupon = await request<{ sequence: number; status: string }>(`${url}/v1/events/${eventId}/coupons/${holder.userId}`);
        const expected = holder.userId.startsWith('p-') ? 'pending' : 'persisted';
        if (coupon.status !== 200 || coupon.body.sequence !== holder.body.sequence || coupon.body.status !== expected) {
          wrong.push(`coupon ${holder.userId} ${JSON.stringify(coupon.body)}`);
        }
      }
      reads += 1;
    };
    for (let start = 0; reads < READS; start += 16) await Promise.all(Array.from({ length: 16 }, (_, j) => read(start + j)));
    // 'Questions' counts the SHOW itself: one for each of the two reads of it.
    const caused = (await statements()) - before - 1;
    await recordFigures('public-reads', { reads, mysqlStatements: caused, statementsPerRead: caused / reads, wrongAnswers: wrong.length });
    expect(wrong).toEqual([]);
    expect(caused).toBeLessThanOrEqual(0.02 * reads);
  }, 180_000);
});
