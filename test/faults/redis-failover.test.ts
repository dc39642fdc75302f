/**
 * Issue 8, item 3: a replica failover loses no acknowledged coupon.
 *
 * Production runs Redis as a primary with an asynchronous replica, watched by Sentinel. When the primary dies,
 * whatever it acknowledged but had not shipped to the replica is gone, and the promoted replica holds an older
 * counter and user set. Here: a primary, a replica that replicates THROUGH a freezing TCP proxy (so the test can
 * stall replication while the primary keeps answering), one Sentinel (quorum 1), 2 apis and 1 worker that find
 * the primary through the Sentinel, with GATE_MIN_REPLICAS=1 (a 202 only once the replica acknowledged the gate's
 * write, else 503).
 *
 * Mid-burst the replication link is frozen: for a few hundred ms the primary still runs the gate, but no apply may
 * be answered 202, because the replica cannot acknowledge. Then the primary is SIGKILLed; Sentinel promotes the
 * replica. The killed node comes back as a replica of the promoted one (as a restarted pod rejoins), so writes can
 * be acknowledged again. Applying goes on until the event is sold out or the users are exhausted; a client that
 * got 503 tries once more a little later. At the end every 202 must be a MySQL row with the sequence its client
 * was told, never more than N rows, one per user, one per sequence.
 *
 * A second test only measures: apply latency with GATE_MIN_REPLICAS=0 and =1 against a healthy primary and
 * replica, same load, same machine (figures, not asserted as wall-clock limits).
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { type LocalServer, startRedis, startRedisSentinel } from '../../scripts/local-servers/index.ts';
import type { ServiceProcess } from '../../scripts/services.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { createEvent, request, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { type ApplyResult, applyLoad, countBy, percentile, users } from '../support/load.ts';
import { type PersistedCheck, checkPersisted, keepLogs, recordFigures } from '../support/observe.ts';
import { outboxDrained } from '../support/outbox.ts';
import { masterPort, replicaHealthy, sentinelClient, sentinelReplicas, useExtraServers } from '../support/sentinel.ts';

const HOST = '127.0.0.1';
const MASTER_NAME = 'coupon-failover';

// The scenario
const TOTAL = 600;
const USERS = 2_400;
const RATE_PER_SEC = 200;
const CONCURRENCY = 32;
/** replication freezes once this many coupons were answered 202, about 1 s into the burst */
const FREEZE_AFTER_ISSUED = 200;
/** how long the primary keeps answering with its replica cut off before it is killed */
const STALL_MS = 400;
/** a client answered 503 tries once more this much later */
const RETRY_AFTER_MS = 1_500;
/** how long the test waits for the worker to persist every 202 before it checks what is there */
const PERSIST_WATCH_MS = 60_000;

// The latency figures
const LATENCY_APPLIES = 2_000;
const LATENCY_WARMUP = 200;
const LATENCY_CONCURRENCY = 16;
const LATENCY_REPLICA_TIMEOUT_MS = 1_000;

interface Answer {
  userId: string;
  status: number;
  sequence: number | undefined;
  error: string | undefined;
  /** performance.now() when the (last) attempt started and when its answer arrived */
  startedAt: number;
  answeredAt: number;
  latencyMs: number;
  attempt: 'first' | 'retry';
  networkErrors: string[];
}

const toAnswer = (result: ApplyResult, attempt: Answer['attempt']): Answer => {
  const answeredAt = performance.now();
  return {
    userId: result.userId, status: result.status, sequence: result.body.sequence, error: result.body.error,
    startedAt: answeredAt - result.latencyMs, answeredAt, latencyMs: result.latencyMs, attempt, networkErrors: result.networkErrors,
  };
};

describeFault('Redis replica failover', { folder: 'redis-failover' }, (stack) => {
  /** servers this file starts besides the stack's (replicas, Sentinel), under their own folder */
  const extra = useExtraServers('redis-failover');
  const { track, clients } = extra;
  let latencyFigures: Record<string, unknown> | undefined;

  test('figures: apply latency with GATE_MIN_REPLICAS=0 and =1 against a healthy primary and replica', async () => {
    const primary = track(await startRedis({ dir: join(extra.dir, 'latency-primary') }));
    const replica = track(await startRedis({ dir: join(extra.dir, 'latency-replica'), replicaOf: { host: HOST, port: primary.port } }));
    // A replica that is up acknowledges well within a second even on a loaded CI machine (with 200 ms, 1 apply of
    // 2,000 was answered 503 in two CI trials, three test files running beside it): a 503 here would mean a fault,
    // not a slow acknowledgement. The failover test below keeps 200 ms: there the stall is the fault.
    const env = { REDIS_URL: primary.url, GATE_REPLICA_TIMEOUT_MS: String(LATENCY_REPLICA_TIMEOUT_MS) };
    await stack.spawnWorker(env);
    const settings = [0, 1] as const;
    const apis = await Promise.all(settings.map((minReplicas) => stack.spawnApi({ ...env, GATE_MIN_REPLICAS: String(minReplicas) })));
    const eventIds = settings.map((minReplicas) => uniqueEventId(`wait${minReplicas}`));
    for (const s of settings) {
      await createEvent(apis[s]!.url, { id: eventIds[s]!, totalQuantity: LATENCY_WARMUP + LATENCY_APPLIES });
      await applyLoad({ urls: () => [apis[s]!.url], eventId: eventIds[s]!, users: users(`warm${s}`, LATENCY_WARMUP), concurrency: LATENCY_CONCURRENCY });
    }
    // Blocks in the order A B B A A B B A: both settings see the machine's drift (the worker draining, other jobs) alike.
    const order = [0, 1, 1, 0, 0, 1, 1, 0] as const;
    const perBlock = LATENCY_APPLIES / (order.length / 2);
    const results: ApplyResult[][] = [[], []];
    const elapsedMs = [0, 0];
    for (const [block, s] of order.entries()) {
      const started = performance.now();
      results[s]!.push(...await applyLoad({
        urls: () => [apis[s]!.url], eventId: eventIds[s]!, users: users(`lat${s}-${block}`, perBlock), concurrency: LATENCY_CONCURRENCY,
      }));
      elapsedMs[s]! += performance.now() - started;
    }
    const runs = Object.fromEntries(settings.map((s) => {
      const latencies = results[s]!.map((result) => result.latencyMs);
      return [`gateMinReplicas${s}`, {
        statuses: countBy(results[s]!, (result) => result.status), p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99),
        maxMs: percentile(latencies, 100), perSec: Math.round((latencies.length / elapsedMs[s]!) * 1000),
      }];
    }));
    latencyFigures = {
      applies: LATENCY_APPLIES, concurrency: LATENCY_CONCURRENCY, warmup: LATENCY_WARMUP, blocks: order.join(''), replicaTimeoutMs: LATENCY_REPLICA_TIMEOUT_MS,
      loadAverage1m: Math.round(loadavg()[0]! * 100) / 100, ...runs,
    };
    await recordFigures('redis-replica-wait-latency', latencyFigures);
    await stack.stopProcesses();
    await replica.stop();
    await primary.stop();

    // A healthy replica acknowledges every write in time: the setting costs latency, not answers.
    for (const s of settings) expect(countBy(results[s]!, (result) => result.status)).toEqual({ 202: LATENCY_APPLIES });
  }, 180_000);

  test('when the primary dies holding gate writes its replica never received, then Sentinel promotes the replica, issuing resumes, and every 202 is a MySQL row with its sequence', async () => {
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
      GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '200',
      // Only to bound the test: entries a worker held when the primary died are taken over after this long.
      CLAIM_IDLE_MS: '3000',
    };
    const apis = [await stack.spawnApi(env), await stack.spawnApi(env)];
    const worker = await stack.spawnWorker(env);
    const services: Array<[string, ServiceProcess]> = [['api-0', apis[0]!], ['api-1', apis[1]!], ['worker', worker]];
    const eventId = uniqueEventId('failover');
    await createEvent(apis[0]!.url, { id: eventId, totalQuantity: TOTAL });

    const answers: Answer[] = [];
    const retries: Array<Promise<unknown>> = [];
    let issuedSoFar = 0;
    let fault: Promise<void> | undefined;
    const at: { start: number; freeze?: number; kill?: number; switched?: number; rejoined?: number } = { start: 0 };
    let frozenConnections = 0;
    let rejoined: LocalServer | undefined;
    let faultError: unknown;
    const issuedAtKill: { primary?: number; replica?: number } = {};
    let mysqlMaxSequenceAtPromotion: number | undefined;
    /** the event's issued counter read straight from one server (a replica answers reads) */
    const issuedOn = async (server: LocalServer) => {
      const client = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
      client.on('error', () => undefined);
      try {
        return Number(await client.get(eventKeys(eventId).issued));
      } finally {
        client.disconnect();
      }
    };
    const maxPersistedSequence = async () =>
      Number((await stack.query<{ m: number | null }>('select max(sequence) as m from coupon where event_id = ?', [eventId]))[0]?.m ?? 0);

    const inflictFault = async () => {
      // The replica's link must run through the proxy at this moment (under load it may be reconnecting).
      await waitFor(() => extra.proxy!.liveConnections > 0 || undefined, { timeoutMs: 10_000, intervalMs: 10, what: 'the replication link through the proxy' });
      frozenConnections = extra.proxy!.freezeExisting();
      at.freeze = performance.now();
      await sleep(STALL_MS);
      [issuedAtKill.primary, issuedAtKill.replica] = await Promise.all([issuedOn(primary), issuedOn(replica)]);
      at.kill = performance.now();
      await primary.kill();
      await waitFor(async () => (await masterPort(sentinelRedis, MASTER_NAME)) === replica.port, { timeoutMs: 30_000, intervalMs: 20, what: 'Sentinel to promote the replica' });
      at.switched = performance.now();
      mysqlMaxSequenceAtPromotion = await maxPersistedSequence();
      // The killed node comes back as a replica of the promoted one, as a restarted pod rejoins its Sentinel's
      // primary: without a replica, GATE_MIN_REPLICAS=1 could acknowledge nothing on the promoted server.
      rejoined = track(await startRedis({ dir: primary.dir, port: primary.port, replicaOf: { host: HOST, port: replica.port } }));
      at.rejoined = performance.now();
    };

    const retryLater = (userId: string) => sleep(RETRY_AFTER_MS).then(() => applyLoad({
      urls: () => apis.map((api) => api.url), eventId, users: [userId], concurrency: 1,
      onResult: (result) => answers.push(toAnswer(result, 'retry')),
    }));

    at.start = performance.now();
    await applyLoad({
      urls: () => apis.map((api) => api.url), eventId, users: users('u', USERS), concurrency: CONCURRENCY, ratePerSec: RATE_PER_SEC,
      onResult: (result) => {
        answers.push(toAnswer(result, 'first'));
        if (result.status === 202 && ++issuedSoFar >= FREEZE_AFTER_ISSUED && !fault) {
          fault = inflictFault().catch((error: unknown) => { faultError = error; });
        }
        if (result.status === 503) retries.push(retryLater(result.userId));
      },
    });
    await fault;
    await Promise.all(retries);
    const loadEndedAt = performance.now();

    // Wait (time-boxed) until the worker has persisted every 202 and drained the outbox on the promoted primary.
    const primaryNow = new Redis({ sentinels: [{ host: HOST, port: sentinel.port }], name: MASTER_NAME, maxRetriesPerRequest: 1 });
    primaryNow.on('error', () => undefined);
    clients.push(primaryNow);
    const issued = answers.filter((a) => a.status === 202).map((a) => ({ userId: a.userId, sequence: a.sequence! }));
    let check: PersistedCheck | undefined;
    let persistedAfterLoadMs: number | undefined;
    try {
      check = await waitFor(async () => {
        const now = await checkPersisted(stack.query, eventId, issued);
        return now.issuedButMissing.length === 0 && (await outboxDrained(primaryNow, eventId)) ? now : undefined;
      }, { timeoutMs: PERSIST_WATCH_MS, intervalMs: 250, what: 'every 202 persisted and the outbox drained' });
      persistedAfterLoadMs = Math.round(performance.now() - loadEndedAt);
    } catch {
      // Checked below, with what is there.
    }
    check ??= await checkPersisted(stack.query, eventId, issued);

    // What happened, in the order the clients saw it.
    const ms = (t: number | undefined, from: number | undefined) => (t === undefined || from === undefined ? null : Math.round(t - from));
    const first = answers.filter((a) => a.attempt === 'first');
    const retried = answers.filter((a) => a.attempt === 'retry');
    const inStall = answers.filter((a) => at.freeze !== undefined && a.startedAt >= at.freeze && a.startedAt < (at.kill ?? Infinity));
    const afterKill202 = answers.filter((a) => a.status === 202 && at.kill !== undefined && a.startedAt >= at.kill)
      .sort((a, b) => a.answeredAt - b.answeredAt);
    const sequencesByUser = new Map<string, Set<number>>();
    for (const a of answers.filter((x) => x.status === 202)) {
      sequencesByUser.set(a.userId, (sequencesByUser.get(a.userId) ?? new Set()).add(a.sequence!));
    }
    const twice202 = [...sequencesByUser].filter(([, sequences]) => sequences.size > 1).map(([userId, sequences]) => ({ userId, sequences: [...sequences] }));
    const sequencesAnswered = issued.map((i) => i.sequence);
    const answered202Users = new Set(issued.map((i) => i.userId));
    // Coupons issued on a write the replica did not acknowledge in time (answered 503) that still reached MySQL:
    // their holders were never told 202. What those clients heard last:
    const unacknowledgedHolders = new Set((await stack.query<{ user_id: string }>('select user_id from coupon where event_id = ?', [eventId]))
      .map((row) => row.user_id).filter((userId) => !answered202Users.has(userId)));
    const lastAnswer = new Map(answers.map((a) => [a.userId, a]));
    const rowsWithout202 = {
      count: unacknowledgedHolders.size,
      lastAnswers: countBy([...unacknowledgedHolders], (userId) => lastAnswer.get(userId)?.status ?? 'none'),
      // ...and what they read when they look their coupon up afterwards
      lookedUp: countBy(await Promise.all([...unacknowledgedHolders].map(async (userId) =>
        (await request(`${apis[0]!.url}/v1/events/${eventId}/coupons/${userId}`)).status)), (status) => status),
    };
    const promotedRole = await primaryNow.role().then((role) => role[0]).catch((error: Error) => error.message);
    const currentMaster = await masterPort(sentinelRedis, MASTER_NAME).catch(() => undefined);

    const figures = {
      totalQuantity: TOTAL, users: USERS, ratePerSec: RATE_PER_SEC, concurrency: CONCURRENCY, gateMinReplicas: 1, gateReplicaTimeoutMs: 200,
      freezeAfterIssued: FREEZE_AFTER_ISSUED, stallMs: STALL_MS, retryAfterMs: RETRY_AFTER_MS,
      firstAttempts: countBy(first, (a) => a.status),
      retriesOn503: countBy(retried, (a) => a.status),
      networkErrors: answers.reduce((n, a) => n + a.networkErrors.length, 0),
      replicationConnectionsFrozen: frozenConnections,
      appliesDuringStall: countBy(inStall, (a) => a.status),
      appliesDuringStallLatencyMs: { p50: percentile(inStall.map((a) => a.latencyMs), 50), max: percentile(inStall.map((a) => a.latencyMs), 100) },
      freezeAtMs: ms(at.freeze, at.start),
      killAfterFreezeMs: ms(at.kill, at.freeze),
      sentinelPromotedAfterKillMs: ms(at.switched, at.kill),
      killedNodeRejoinedAsReplicaAfterKillMs: ms(at.rejoined, at.kill),
      firstIssuedAfterKillMs: ms(afterKill202[0]?.answeredAt, at.kill),
      firstIssuedAfterKillSequence: afterKill202[0]?.sequence ?? null,
      issuedCounterAtKill: issuedAtKill,
      mysqlMaxSequenceAtPromotion: mysqlMaxSequenceAtPromotion ?? null,
      issuedBeforeKill: answers.filter((a) => a.status === 202 && at.kill !== undefined && a.startedAt < at.kill).length,
      issuedAfterKill: afterKill202.length,
      answered202: issued.length,
      answered202Sequences: { min: Math.min(...sequencesAnswered), max: Math.max(...sequencesAnswered), distinct: new Set(sequencesAnswered).size },
      usersAnswered202TwiceWithDifferentSequences: twice202.length,
      sequencesAnswered202ToSeveralUsers: issued.length - new Set(sequencesAnswered).size,
      loadMs: ms(loadEndedAt, at.start),
      persistedAfterLoadMs: persistedAfterLoadMs ?? null,
      rows: check.rows, distinctUsers: check.distinctUsers, distinctSequences: check.distinctSequences,
      minSequence: check.minSequence, maxSequence: check.maxSequence,
      answered202ButMissingOrOtherSequence: check.issuedButMissing.length,
      rowsOfUsersNeverAnswered202: rowsWithout202,
      promotedRole, sentinelMasterPort: currentMaster ?? null, replicaPort: replica.port,
      faultError: faultError ? String(faultError) : null,
      waitLatency: latencyFigures ?? null,
    };
    await recordFigures('redis-failover', figures);
    await keepLogs('redis-failover', [...services, ['sentinel', sentinel], ['replica', replica], ...(rejoined ? [['rejoined', rejoined] as [string, LocalServer]] : [])]);

    expect(faultError).toBeUndefined();
    expect(frozenConnections).toBeGreaterThan(0);
    // The scenario happened: the primary died holding gate writes its replica never received.
    expect(issuedAtKill.primary).toBeGreaterThan(issuedAtKill.replica!);
    // Sentinel promoted the replica (waited for above, 30 s at most), and Sentinel's primary is a primary now. Not
    // asserted: that it is still the replica at the end. With down-after at 1 s, a loaded CI machine has seen
    // Sentinel fail over once more, to the rejoined old primary (sentinelMasterPort in the figures); the promises
    // below hold across that too.
    expect(at.switched).toBeDefined();
    expect(promotedRole).toBe('master');
    // With the replica cut off nothing may be acknowledged: those applies are 503, not 202.
    expect(inStall.length).toBeGreaterThan(0);
    expect(inStall.filter((a) => a.status === 202).map((a) => `${a.userId} #${a.sequence}`)).toEqual([]);
    // Issuing resumed on the promoted replica.
    expect(afterKill202.length).toBeGreaterThan(0);
    // No user was told two different coupons.
    expect(twice202).toEqual([]);
    // Every 202 is a MySQL row with the sequence its client was told; never more than N, one per user and sequence.
    expect(check.issuedButMissing).toEqual([]);
    expect(check.rows).toBeLessThanOrEqual(TOTAL);
    expect(check.maxSequence).toBeLessThanOrEqual(TOTAL);
    expect(check.distinctUsers).toBe(check.rows);
    expect(check.distinctSequences).toBe(check.rows);
  }, 240_000);
});
