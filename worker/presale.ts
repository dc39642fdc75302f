import { AutoscalingV2Api, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { existsSync, readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { CouponStore } from '../src/db/store.ts';
import type { CouponEvent } from '../src/domain/coupon.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { eventKeys } from '../src/redis/keys.ts';
import type { WorkerMetrics } from './metrics.ts';

/** The annotation on the api HPA that holds its minReplicas as the chart set it: what the scaler gives back. */
export const BASE_MIN_REPLICAS_ANNOTATION = 'coupon.dev/base-min-replicas';

export interface PresaleWindow {
  /** how long before an event's start its capacity is wanted */
  leadMs: number;
  /** how long after its start at most (a sale that never sells out does not hold the pods for ever) */
  holdMs: number;
}

/**
 * The events that want the api at its pre-sale size now: from `leadMs` before the start until sold out, ended,
 * or `holdMs` after the start, whichever comes first. A paused event still wants them (it may resume any time).
 */
export function eventsWantingCapacity(
  events: ReadonlyArray<Pick<CouponEvent, 'id' | 'totalQuantity' | 'startsAt' | 'endsAt'>>, issued: ReadonlyMap<string, number>,
  nowMs: number, window: PresaleWindow,
): string[] {
  return events.filter((event) => {
    const start = event.startsAt.getTime();
    if (nowMs < start - window.leadMs || nowMs >= start + window.holdMs) return false;
    if (event.endsAt && nowMs >= event.endsAt.getTime()) return false;
    return (issued.get(event.id) ?? 0) < event.totalQuantity;
  }).map((event) => event.id);
}

/** The api's HorizontalPodAutoscaler, as the scaler reads and changes it. */
export interface ApiAutoscaler {
  read(): Promise<{ minReplicas: number; maxReplicas: number; baseMinReplicas: number | null }>;
  setMinReplicas(replicas: number): Promise<void>;
}

/** The HPA named `name` in this pod's namespace, through the API server with the pod's service account. */
export function inClusterAutoscaler(name: string): ApiAutoscaler {
  const account = '/var/run/secrets/kubernetes.io/serviceaccount';
  if (!process.env.KUBERNETES_SERVICE_HOST || !existsSync(`${account}/token`)) {
    throw new Error('PRESALE_REPLICAS > 0 needs the worker to run in Kubernetes with its service account token mounted (the chart does both)');
  }
  const config = new KubeConfig();
  config.loadFromCluster();
  const namespace = readFileSync(`${account}/namespace`, 'utf8').trim();
  const api = config.makeApiClient(AutoscalingV2Api);
  return {
    async read() {
      const hpa = await api.readNamespacedHorizontalPodAutoscaler({ name, namespace });
      const base = Number(hpa.metadata?.annotations?.[BASE_MIN_REPLICAS_ANNOTATION]);
      return { minReplicas: hpa.spec?.minReplicas ?? 1, maxReplicas: hpa.spec?.maxReplicas ?? 1, baseMinReplicas: Number.isInteger(base) && base > 0 ? base : null };
    },
    async setMinReplicas(replicas) {
      await api.patchNamespacedHorizontalPodAutoscaler(
        { name, namespace, body: { spec: { minReplicas: replicas } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    },
  };
}

export interface PresaleDeps {
  store: CouponStore;
  redis: CouponRedis;
  autoscaler: ApiAutoscaler;
  /** PRESALE_REPLICAS: the api's floor while a sale wants capacity */
  replicas: number;
  window: PresaleWindow;
  metrics: WorkerMetrics;
  logger: Logger;
}

/**
 * Capacity before the sale (PRESALE_REPLICAS > 0). An HPA adds api pods tens of seconds after the load arrives
 * (metrics, its sync period, scheduling, readiness after the gate state is compared with MySQL); a launch burst is
 * over in seconds. The starts are known in advance, so every few seconds the worker raises the api HPA's
 * minReplicas to PRESALE_REPLICAS while an event wants capacity (eventsWantingCapacity), and gives back the
 * chart's minReplicas (the HPA's annotation) once none does. The HPA still scales out beyond it under load. Every
 * worker replica does the same: each change is one idempotent patch of one field.
 */
export class PresaleScaler {
  readonly #deps: PresaleDeps;

  constructor(deps: PresaleDeps) {
    this.#deps = deps;
  }

  /** One look: the min replicas wanted now, set on the HPA when it differs. */
  async step(nowMs = Date.now()): Promise<{ wanting: string[]; minReplicas: number }> {
    const { store, redis, autoscaler, replicas, window, metrics, logger } = this.#deps;
    const events = await store.listLiveEvents();
    const counts = await Promise.all(events.map((event) => redis.get(eventKeys(event.id).issued)));
    const issued = new Map(events.map((event, i) => [event.id, Number(counts[i] ?? 0)]));
    const wanting = eventsWantingCapacity(events, issued, nowMs, window);
    const hpa = await autoscaler.read();
    if (hpa.baseMinReplicas === null) throw new Error(`the api HPA has no ${BASE_MIN_REPLICAS_ANNOTATION} annotation: is it the chart's?`);
    const minReplicas = wanting.length > 0 ? Math.min(hpa.maxReplicas, Math.max(replicas, hpa.baseMinReplicas)) : hpa.baseMinReplicas;
    metrics.presaleMinReplicas.set(minReplicas);
    if (hpa.minReplicas !== minReplicas) {
      await autoscaler.setMinReplicas(minReplicas);
      logger.info({ from: hpa.minReplicas, to: minReplicas, events: wanting.slice(0, 10) }, wanting.length > 0
        ? 'pre-sale: api HPA minReplicas raised before the sale'
        : 'pre-sale: no sale wants extra capacity; api HPA minReplicas given back');
    }
    return { wanting, minReplicas };
  }
}
