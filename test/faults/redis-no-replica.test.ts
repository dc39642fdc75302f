/**
 * Issue 20, break 1: a promoted primary without a replica of its own must refuse BEFORE issuing.
 *
 * GATE_MIN_REPLICAS=1 answers 202 only once a replica holds the gate's write. A primary, a replica that replicates
 * through a freezing TCP proxy, one Sentinel (quorum 1), 2 apis and 1 worker that find the primary through the
 * Sentinel. Mid-burst replication is frozen, then the primary is SIGKILLed; Sentinel promotes the replica, which has
 * no replica of its own until the killed node comes back (NO_REPLICA_MS later) as its replica. Meanwhile every
 * apply must be answered 503 WITHOUT a coupon being issued: issuing and then answering 503 because WAIT cannot be met
 * drains the stock to users told only 503, and their retries after the sell-out hear 410 from the local sold-out
 * flag, so they never learn they hold a coupon.
 *
 * The history check: every answer a client got is compared with MySQL at the end. Every 202 and every 409
 * already_applied names the row of its user; never more than N rows, one per user and sequence; every holder was
 * told (some answer named their row's sequence); no holder ever heard 410; and nothing was issued while the
 * promoted primary had no replica. Clients answered 503 ask again after RETRY_AFTER_MS until they get another answer.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { type LocalServer, startRedis, startRedisSentinel } from '../../scripts/local-servers/index.ts';
import type { ServiceProcess } from '../../scripts/services.ts';
import { parseUserEntry } from '../../src/redis/formats.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { type ApplyResult, applyLoad, countBy, users } from '../support/load.ts';
import { type PersistedCheck, checkPersisted, keepLogs, recordFigures, toldSequence } from '../support/observe.ts';
import { outboxDrained } from '../support/outbox.ts';
import { masterPort, replicaHealthy, sentinelClient, sentinelReplicas, useExtraServers } from '../support/sentinel.ts';

const HOST = '127.0.0.1';
const MASTER_NAME = 'coupon-no-replica';

const TOTAL = 300;
const USERS = 1_500;
const RATE_PER_SEC = 150;
const CONCURRENCY = 16;
/** replication freezes once this many coupons were answered 202 */
const FREEZE_AFTER_ISSUED = 80;
/** how long the primary keeps answering with its replica cut off before it is killed */
const STALL_MS = 400;
/** how long the promoted primary runs without a replica of its own */
const NO_REPLICA_MS = 3_000;
/** a client answered 503 asks again this much later, until it gets another answer (at most RETRIES times) */
const RETRY_AFTER_MS = 1_500;
const RETRIES = 12;
const PERSIST_WATCH_MS = 60_000;

interface Answer {
  userId: string;
  status: number;
  error: string | undefined;
  told: number | undefined;
  answeredAt: number;
}

const toAnswer = (result: ApplyResult): Answer => ({
  userId: result.userId, status: result.status, error: result.body.error, told: toldSequence(result.status, result.body), answeredAt: Date.now(),
});

describeFault('Redis primary promoted without a replica', { folder: 'redis-no-replica' }, (stack) => {
  const extra = useExtraServers('redis-no-replica');
  const { track, clients } = extra;

  test('when the promoted primary has no replica, then applies are refused with 503 before anything is issued, and every holder is told 202 or 409 with their coupon, never 410', async () => {
    const primary = stack.redis;
    extra.proxy = await startTcpProxy({ port: primary.port });
    const replica = track(await startRedis({ dir: join(extra.dir, 'replica'), replicaOf: { host: HOST, port: extra.proxy.port } }));
    const sentinel = track(await startRedisSentinel({
      dir: join(extra.dir, 'sentinel'), masterName: MASTER_NAME, master: { host: HOST, port: primary.port },
      quorum: 1, downAfterMs: 1_000, failoverTimeoutMs: 5_000,
    }));
    const sentinelRedis = sentinelClient(sentinel);
    clients.push(sentinelRedis);
    await waitFor(async () => replicaHealthy(await sentinelReplicas(sentinelRedis, MASTER_NAME), replica.port), { what: 'the Sentinel to know the replica' });

    const env = {
      REDIS_SENTINELS: `${HOST}:${sentinel.port}`, REDIS_SENTINEL_MASTER: MASTER_NAME,
      GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '200', SOLD_OUT_CACHE_MS: '60000',
      // Only to bound the test: entries a worker held when the primary died are taken over after this long.
      CLAIM_IDLE_MS: '3000',
    };
    const apis = [await stack.spawnApi(env), await stack.spawnApi(env)];
    const worker = await stack.spawnWorker(env);
    const services: Array<[string, ServiceProcess]> = [['api-0', apis[0]!], ['api-1', apis[1]!], ['worker', worker]];
    const urls = () => apis.map((api) => api.url);
    const eventId = uniqueEventId('noreplica');
    await createEvent(apis[0]!.url, { id: eventId, totalQuantity: TOTAL });

    const answers: Answer[] = [];
    const retries: Array<Promise<unknown>> = [];
    let issuedSoFar = 0;
    let fault: Promise<void> | undefined;
    let faultError: unknown;
    /** wall-clock times (ms since the epoch, as Redis TIME stamps the users' entries) */
    const at: { kill?: number; switched?: number; rejoined?: number } = {};
    let rejoined: LocalServer | undefined;

    const inflictFault = async () => {
      await waitFor(() => extra.proxy!.liveConnections > 0 || undefined, { timeoutMs: 10_000, intervalMs: 10, what: 'the replication link through the proxy' });
      extra.proxy!.freezeExisting();
      await sleep(STALL_MS);
      at.kill = Date.now();
      await primary.kill();
      await waitFor(async () => (await masterPort(sentinelRedis, MASTER_NAME)) === replica.port, { timeoutMs: 30_000, intervalMs: 20, what: 'Sentinel to promote the replica' });
      at.switched = Date.now();
      // The promoted primary has no replica: GATE_MIN_REPLICAS=1 can acknowledge nothing until the killed node returns.
      await sleep(NO_REPLICA_MS);
      at.rejoined = Date.now();
      rejoined = track(await startRedis({ dir: primary.dir, port: primary.port, replicaOf: { host: HOST, port: replica.port } }));
    };

    const askUntilAnswered = async (userId: string) => {
      for (let attempt = 0; attempt < RETRIES; attempt++) {
        await sleep(RETRY_AFTER_MS);
        const [result] = await applyLoad({ urls, eventId, users: [userId], concurrency: 1 });
        answers.push(toAnswer(result!));
        if (result!.status !== 503 && result!.status !== 0) return;
      }
    };

    await applyLoad({
      urls, eventId, users: users('u', USERS), concurrency: CONCURRENCY, ratePerSec: RATE_PER_SEC,
      onResult: (result) => {
        answers.push(toAnswer(result));
        if (result.status === 202 && ++issuedSoFar >= FREEZE_AFTER_ISSUED && !fault) {
          fault = inflictFault().catch((error: unknown) => { faultError = error; });
        }
        if (result.status === 503 || result.status === 0) retries.push(askUntilAnswered(result.userId));
      },
    });
    await fault;
    await Promise.all(retries);

    const primaryNow = new Redis({ sentinels: [{ host: HOST, port: sentinel.port }], name: MASTER_NAME, maxRetriesPerRequest: 1 });
    primaryNow.on('error', () => undefined);
    clients.push(primaryNow);
    const told = answers.filter((a) => a.told !== undefined).map((a) => ({ userId: a.userId, sequence: a.told! }));
    let check: PersistedCheck | undefined;
    try {
      check = await waitFor(async () => {
        const now = await checkPersisted(stack.query, eventId, told);
        return now.issuedButMissing.length === 0 && (await outboxDrained(primaryNow, eventId)) ? now : undefined;
      }, { timeoutMs: PERSIST_WATCH_MS, intervalMs: 250, what: 'every told coupon persisted and the outbox drained' });
    } catch {
      // Checked below, with what is there.
    }
    check ??= await checkPersisted(stack.query, eventId, told);

    const rows = await stack.query<{ user_id: string; sequence: number }>('select user_id, sequence from coupon where event_id = ?', [eventId]);
    const answersOf = new Map<string, Answer[]>();
    for (const a of answers) answersOf.set(a.userId, [...(answersOf.get(a.userId) ?? []), a]);
    const holdersNeverTold = rows.filter((row) => !(answersOf.get(row.user_id) ?? []).some((a) => a.told === Number(row.sequence)));
    const holdersTold410 = rows.filter((row) => (answersOf.get(row.user_id) ?? []).some((a) => a.status === 410));
    // Coupons the gate issued while the promoted primary had no replica (entries stamped by its clock in that window).
    const entries = Object.values(await primaryNow.hgetall(eventKeys(eventId).users)).map(parseUserEntry);
    const issuedWithoutReplica = entries.filter((e) => at.switched !== undefined && e.issuedAtMs >= at.switched && e.issuedAtMs < at.rejoined!).length;
    const issuedBetweenKillAndRejoin = entries.filter((e) => at.kill !== undefined && e.issuedAtMs >= at.kill && e.issuedAtMs < at.rejoined!).length;
    const noReplicaWindow = answers.filter((a) => at.switched !== undefined && a.answeredAt >= at.switched && a.answeredAt < at.rejoined!);

    const figures = {
      totalQuantity: TOTAL, users: USERS, ratePerSec: RATE_PER_SEC, gateMinReplicas: 1, stallMs: STALL_MS, noReplicaMs: NO_REPLICA_MS,
      answers: countBy(answers, (a) => `${a.status}${a.error ? ` ${a.error}` : ''}`),
      answersWhileNoReplica: countBy(noReplicaWindow, (a) => `${a.status}${a.error ? ` ${a.error}` : ''}`),
      issuedWithoutReplica, issuedBetweenKillAndRejoin,
      rows: check.rows, distinctUsers: check.distinctUsers, distinctSequences: check.distinctSequences, maxSequence: check.maxSequence,
      toldButMissingOrOtherSequence: check.issuedButMissing.length,
      holdersNeverTold: holdersNeverTold.length,
      holdersNeverToldLastAnswers: countBy(holdersNeverTold, (row) => answersOf.get(row.user_id)?.at(-1)?.status ?? 'none'),
      holdersTold410: holdersTold410.length,
      faultError: faultError ? String(faultError) : null,
    };
    await recordFigures('redis-no-replica', figures);
    await keepLogs('redis-no-replica', [...services, ['sentinel', sentinel], ['replica', replica], ...(rejoined ? [['rejoined', rejoined] as [string, LocalServer]] : [])]);

    expect(faultError).toBeUndefined();
    expect(await masterPort(sentinelRedis, MASTER_NAME)).toBe(replica.port);
    // The promoted primary without a replica issued nothing: its applies were 503 before the gate wrote anything.
    expect(noReplicaWindow.length).toBeGreaterThan(0);
    expect(issuedWithoutReplica).toBe(0);
    // Issuing resumed once the replica was back, and the event sold out.
    expect(check.rows).toBe(TOTAL);
    // The history: every 202 and 409 names its user's row; never more than N; one per user and sequence.
    expect(check.issuedButMissing).toEqual([]);
    expect(check.maxSequence).toBeLessThanOrEqual(TOTAL);
    expect(check.distinctUsers).toBe(check.rows);
    expect(check.distinctSequences).toBe(check.rows);
    // Every holder was told, and none heard 410.
    expect(holdersNeverTold.map((row) => `${row.user_id} #${row.sequence}`)).toEqual([]);
    expect(holdersTold410.map((row) => row.user_id)).toEqual([]);
  }, 240_000);
});
