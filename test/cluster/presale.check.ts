/**
 * `npm run test:cluster` (node's runner takes the files in name order: after overload.check.ts): capacity before the sale.
 *   13. The release upgraded with config.presaleReplicas=3 (presaleHold 45 s, so the events of earlier checks do not
 *       hold the floor): an event created with startsAt 60 s ahead raises the api HPA's minReplicas to 3 and brings
 *       the api to 3 ready pods before its start, with no load at all (the HPA alone would add pods tens of seconds
 *       after a burst began); a burst at the start sells it out, every 202 a row; then the floor is given back (2)
 *       and the HPA scales in. The release then goes back to its earlier values.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  NS, RELEASE, admin, burst, helmAsync, issuedUsers, kubectlJson, log, pods, request, root, sleep, unique, users, waitFor, waitPersisted,
} from './cluster.ts';

const T = { timeout: 12 * 60_000 };
const PRESALE = 3;
const BASE = 2;
const LEAD_S = 60;

const hpa = () => kubectlJson(['-n', NS, 'get', 'hpa', `${RELEASE}-api`]);
const readyApi = () => pods('api').filter((p) => p.ready && !p.deleting).length;

test('13. pre-sale scaling: an event 60 s ahead brings the api to its pre-sale replicas before the start, and the floor goes back after the sell-out', T, async () => {
  const saved = join(root, '.cluster', 'values-before-presale.json');
  writeFileSync(saved, (await helmAsync(['get', 'values', RELEASE, '-n', NS, '-o', 'json'])).output);
  const upgrade = await helmAsync(['upgrade', RELEASE, join(root, 'charts', 'coupon'), '-n', NS, '--reuse-values',
    '--set', `config.presaleReplicas=${PRESALE},config.presaleHold=45s`, '--wait', '--timeout', '10m']);
  assert.equal(upgrade.code, 0, `helm upgrade with config.presaleReplicas failed: ${upgrade.output}`);
  try {
    // Events of the checks before, started and not sold out, may hold the floor for presaleHold: wait for the base.
    await waitFor(`the api HPA at its base minReplicas ${BASE}, no earlier event holding it`, 120_000, () => hpa().spec.minReplicas === BASE);
    await waitFor(`${BASE} api pods`, 180_000, () => pods('api').filter((p) => !p.deleting).length === BASE);
    log(`release upgraded (PRESALE_REPLICAS ${PRESALE}); api HPA minReplicas ${hpa().spec.minReplicas}, annotation base ${hpa().metadata.annotations?.['coupon.dev/base-min-replicas']}; ${readyApi()} ready api pods`);

    const total = 400;
    const id = unique('presale');
    const created = Date.now();
    const startsAt = new Date(created + LEAD_S * 1000);
    const made = await request('POST', '/v1/events', { id, name: `pre-sale ${id}`, totalQuantity: total, startsAt: startsAt.toISOString() }, admin);
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const timeline: string[] = [];
    const at = () => `${((Date.now() - created) / 1000).toFixed(1)}s`;
    await waitFor(`the api HPA raised to ${PRESALE}`, 60_000, () => hpa().spec.minReplicas === PRESALE, 1000);
    timeline.push(`${at()} minReplicas ${PRESALE}`);
    await waitFor(`${PRESALE} ready api pods`, 120_000, () => readyApi() >= PRESALE, 1000);
    const readyAt = Date.now();
    timeline.push(`${at()} ${readyApi()} api pods ready`);
    log(`event created with startsAt ${LEAD_S} s ahead: ${timeline.join(', ')}; the start at ${LEAD_S}.0s`);
    assert.ok(readyAt < startsAt.getTime(), `the pre-sale replicas were ready ${((readyAt - startsAt.getTime()) / 1000).toFixed(1)} s after the start`);

    // Before the start the event refuses applies; at the start a burst sells it out.
    assert.equal((await request('POST', `/v1/events/${id}/apply`, { userId: 'early' })).status, 409);
    await sleep(Math.max(0, startsAt.getTime() - Date.now() + 500));
    const result = await burst(id, users('presale', total + 200), { concurrency: 32 });
    assert.equal(result.byStatus['202'], total, JSON.stringify(result.byStatus));
    const rows = await waitPersisted(id, total);
    assert.deepEqual(issuedUsers(result).filter((u) => !rows.users.has(u)), [], 'answered 202 without a row');
    const soldOutAt = Date.now();
    log(`burst at the start on ${readyApi()} ready api pods: ${JSON.stringify(result.byStatus)} in ${result.seconds.toFixed(1)} s; ${rows.count} rows`);

    await waitFor(`the api HPA given back its base ${BASE}`, 60_000, () => hpa().spec.minReplicas === BASE, 1000);
    const backAt = Date.now();
    await waitFor(`the api back to ${BASE} pods`, 240_000, () => pods('api').filter((p) => !p.deleting).length === BASE, 2000);
    log(`sold out: minReplicas back to ${BASE} ${((backAt - soldOutAt) / 1000).toFixed(1)} s later, the api at ${BASE} pods ${((Date.now() - soldOutAt) / 1000).toFixed(1)} s later (HPA scale-down window 30 s)`);
  } finally {
    const back = await helmAsync(['upgrade', RELEASE, join(root, 'charts', 'coupon'), '-n', NS, '--reset-values', '-f', saved, '--wait', '--timeout', '10m']);
    log(`release back to its earlier values: exit ${back.code}`);
    assert.equal(back.code, 0, back.output);
  }
});
