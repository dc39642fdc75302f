/**
 * The Redis Cluster capacity bench (`npm run bench -- --cluster`, docs/bench/cluster.md): what one shard carries,
 * what a Cluster of K shards carries, and what this machine can show of it. Three Redis targets in one run, each
 * with its own api processes on the same MariaDB: a standalone server (REDIS_URL only), a 1-primary Cluster and
 * a 3-primary Cluster (REDIS_CLUSTER_NODES), every target with `eventsPerTarget` open events (on the 3-shard
 * Cluster spread evenly over the shards), and Koa hello-world as the in-run baseline. The phases:
 *   memory  MEMORY USAGE of an event's keys on a Cluster shard: just created, after N coupons (the outbox full),
 *           and after a worker persisted them (the outbox trimmed): bytes per event and per coupon
 *   idle    each Redis node's CPU while nothing is sent (a Cluster node gossips on its bus)
 *   gate    the gate script driven by redis-benchmark, so that Redis, not the client, runs out: its Redis CPU
 *           per call at two pipeline depths, and the calls/s one core of Redis takes; the 3 shards once on one
 *           core and once on both
 *   api     wrk through the api (1 and 2 processes), one wrk per api process and event path, rounds interleaving
 *           the cases (their order rotated per round); req/s, p99, the api's CPU per request, each Redis node's
 *           CPU per gate call and how busy it was. One process is pinned as in the hot-path bench (the api on the
 *           last core; wrk and every Redis node on core 0); two run unpinned.
 * Redis CPU is the server's own account (INFO cpu, user + system, µs); gate calls and their in-script time come
 * from INFO commandstats (EVALSHA + EVAL). Each ratio is taken within a round and the median over rounds reported.
 * The capacity model (cluster/model.ts, capacityModel) turns the measured costs into shards, events and requests
 * per second. This file runs the phases in order; each phase is a module of its own under cluster/ (targets.ts,
 * nodes.ts, memory.ts, gate.ts, api.ts), its report is cluster/report.ts, reduced by summary.ts, rendered by markdown.ts.
 */
import { cpus } from 'node:os';
import { pinServer } from './hot-path.ts';
import { measureApi } from './cluster/api.ts';
import { measureGate } from './cluster/gate.ts';
import { measureMemory } from './cluster/memory.ts';
import { capacityModel } from './cluster/model.ts';
import { measureIdle, placeRedis } from './cluster/nodes.ts';
import type { ApiRun, ClusterBenchSettings, ClusterReport, GateRun } from './cluster/report.ts';
import { ratiosOfApi, ratiosOfGate, summariseApi, summariseGate } from './cluster/summary.ts';
import { type ClusterBenchContext, connectTargets, createEvents, startServers } from './cluster/targets.ts';

/** Runs the four phases; returns everything but the machine and the times, which the caller adds. */
export async function measureClusterCapacity(
  ctx: ClusterBenchContext, settings: ClusterBenchSettings,
): Promise<Omit<ClusterReport, 'startedAt' | 'finishedAt' | 'machine'>> {
  const runId = Date.now().toString(36);
  const targets = await connectTargets(ctx);
  try {
    const memory = await measureMemory(ctx, targets.get('cluster-1')!, settings, runId);
    const gateRuns: GateRun[] = [];
    const apiRuns: ApiRun[] = [];
    let idleCpuMsPerSec: ClusterReport['idleCpuMsPerSec'] = [];
    for (const processes of settings.processCounts) {
      const pinned = processes === 1 && cpus().length >= 2;
      const servers = await startServers(ctx, targets, processes);
      try {
        if (processes === settings.processCounts[0]) {
          await createEvents(ctx, targets, servers, settings, runId);
          idleCpuMsPerSec = await measureIdle(targets);
          ctx.log(`idle Redis CPU, ms/s per node: ${idleCpuMsPerSec.map((x) => `${x.target} ${x.node} ${x.msPerSec}`).join(', ')}`);
          gateRuns.push(...await measureGate(ctx, targets, settings));
        }
        placeRedis(targets.values(), pinned);
        if (pinned) for (const group of servers.values()) for (const p of group) pinServer(p.child.pid!);
        apiRuns.push(...await measureApi(ctx, targets, servers, settings, processes, pinned));
      } finally {
        await Promise.all([...servers.values()].flat().map((p) => ctx.running.stop(p)));
      }
    }
    placeRedis(targets.values(), false);
    const apiSummary = summariseApi(apiRuns, settings);
    const gateSummary = summariseGate(gateRuns, settings);
    // The model's costs: the 1-shard Cluster's Redis CPU per gate call driven directly, at the deepest pipeline
    // and at one call per read (the two ends of what a busy shard pays), and the api's CPU per request on the
    // 3-shard Cluster (one process, pinned: the spread case, which costs the api a little more than one shard).
    const gateOf = (pipeline: number) => gateSummary.find((g) => g.target === 'cluster-1' && g.pipeline === pipeline && !g.bothCores)!;
    const spread = apiSummary.find((s) => s.case === 'cluster-3' && s.processes === settings.processCounts[0])!;
    const model = capacityModel({
      gateUsPerCallBatched: gateOf(Math.max(...settings.gatePipelines)).redisCpuUsPerCall,
      gateUsPerCallUnbatched: gateOf(Math.min(...settings.gatePipelines)).redisCpuUsPerCall,
      apiUsPerRequest: spread.apiCpuUsPerRequest,
      eventFixedBytes: memory.eventFixedBytesPersisted,
      bytesPerCoupon: memory.bytesPerCouponPersisted,
      bytesPerCouponInOutbox: memory.bytesPerCouponInOutbox,
    });
    return {
      schemaVersion: 1, kind: 'cluster-capacity', settings, idleCpuMsPerSec, memory,
      gate: { runs: gateRuns, summary: gateSummary, ratios: ratiosOfGate(gateRuns, settings) },
      api: { runs: apiRuns, summary: apiSummary, ratios: ratiosOfApi(apiRuns, settings) },
      model,
    };
  } finally {
    for (const target of targets.values()) {
      target.client.disconnect();
      for (const node of target.nodes) node.client.disconnect();
    }
  }
}
