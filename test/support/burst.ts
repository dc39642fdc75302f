/**
 * A load-generator process for the scale test: fires every request it is given at once (each user's two
 * requests to two different api processes) and prints one JSON line with what each request got back in the end.
 * A request answered 503 is asked again as the README tells clients to: after Retry-After, doubled for each 503 in
 * a row and jittered, with the same Idempotency-Key (admission control sheds part of such a burst).
 * Usage: node test/support/burst.ts '<json {urls, eventId, users}>'
 */
import { setTimeout as sleep } from 'node:timers/promises';

interface BurstPlan {
  urls: string[];
  eventId: string;
  users: string[];
}

const MAX_ATTEMPTS = 8;

const plan = JSON.parse(process.argv[2] ?? '{}') as BurstPlan;

async function applyUntilDecided(url: string, userId: string, key: string) {
  let retries = 0;
  for (let attempt = 1; ; attempt++) {
    const response = await fetch(`${url}/v1/events/${plan.eventId}/apply`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify({ userId }),
    });
    const body = (await response.json()) as { sequence?: number; error?: string };
    const retryAfter = Number(response.headers.get('retry-after'));
    if (response.status !== 503 || !retryAfter || attempt === MAX_ATTEMPTS) {
      return { userId, status: response.status, sequence: body.sequence, error: body.error, retries };
    }
    retries++;
    await sleep(retryAfter * 1000 * 2 ** Math.min(attempt - 1, 3) * (0.5 + Math.random()));
  }
}

const requests: Array<Promise<{ userId: string; status: number; sequence?: number; error?: string; retries?: number }>> = [];
for (const [index, userId] of plan.users.entries()) {
  for (const attempt of [0, 1]) {
    const url = plan.urls[(index + attempt) % plan.urls.length]!;
    requests.push(applyUntilDecided(url, userId, `${userId}.${attempt}`).catch((error: unknown) => ({ userId, status: 0, error: String(error) })));
  }
}
const results = await Promise.all(requests);
process.stdout.write(`${JSON.stringify(results)}\n`);
