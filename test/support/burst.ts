/**
 * A load-generator process for the scale test: fires every request it is given at once (each user's two
 * requests to two different api processes) and prints one JSON line with what each request got back.
 * Usage: node test/support/burst.ts '<json {urls, eventId, users}>'
 */
interface BurstPlan {
  urls: string[];
  eventId: string;
  users: string[];
}

const plan = JSON.parse(process.argv[2] ?? '{}') as BurstPlan;
const requests: Array<Promise<{ userId: string; status: number; sequence?: number; error?: string }>> = [];
for (const [index, userId] of plan.users.entries()) {
  for (const attempt of [0, 1]) {
    const url = plan.urls[(index + attempt) % plan.urls.length];
    requests.push(
      fetch(`${url}/v1/events/${plan.eventId}/apply`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ userId }),
      })
        .then(async (response) => {
          const body = (await response.json()) as { sequence?: number; error?: string };
          return { userId, status: response.status, sequence: body.sequence, error: body.error };
        })
        .catch((error: unknown) => ({ userId, status: 0, error: String(error) })),
    );
  }
}
const results = await Promise.all(requests);
process.stdout.write(`${JSON.stringify(results)}\n`);
