/**
 * GATE_BATCH=on: the gate calls of one event that start within one turn of the event loop go to Redis as one
 * gate-batch.lua call, which decides each in the order they started exactly as gate.lua would one after another.
 * Nothing waits on a timer: a call is sent at the end of the turn it started in (setImmediate, after the I/O
 * callbacks that parsed this turn's requests), so a lone request pays no added wait and a burst shares round
 * trips and the script's fixed costs. Each call keeps the rest of its single path in gate.ts: its own deadline
 * (which starts before it joins a batch), its own settle after a timeout or a failed call (its attempt id is
 * its own, and gate-batch.lua checks it like gate.lua), its own replica acknowledgement (ReplicaAcks groups the
 * WAITs of a batch's callers into one).
 */
import type { CouponRedis } from './client.ts';
import type { EventKeys } from './keys.ts';
import { TurnBatches } from './turn-batches.ts';

/**
 * gate.lua's reply: code, sequence, issuedAtMs, and the node that ran it (for 0 and 6, on a Cluster); from a batched
 * call also what its requests share: one replica acknowledgement covers every write of the call.
 */
export type GateReply = [number, number, number, string?, BatchAck?];

/** GATE_MIN_REPLICAS with GATE_BATCH: the one WAIT of a batched call's writes, started by the first caller to need it. */
export interface BatchAck {
  acked?: Promise<void>;
}

/** The most requests one call decides: bounds the script's run (other commands wait behind it) and its reply. */
const MAX_BATCH = 128;

interface Pending {
  keys: EventKeys;
  eventId: string;
  checkedNodes: string;
  minReplicas: string;
  replicaMaxLagS: string;
  /** userId, requestId, attempt id of each request, in the order they started */
  args: string[];
  callers: Array<PromiseWithResolvers<GateReply>>;
}

export class GateBatcher {
  readonly #redis: CouponRedis;
  readonly #maxBatch: number;
  /** the batch each event is filling this turn */
  readonly #batches = new TurnBatches<Pending>((batch) => this.#send(batch));
  /** script calls sent and requests they decided, for the bench (mean batch size) */
  calls = 0;
  requests = 0;

  constructor(redis: CouponRedis, options: { maxBatch?: number } = {}) {
    this.#redis = redis;
    this.#maxBatch = options.maxBatch ?? MAX_BATCH;
  }

  /** One request's share of a batched call: resolves to what gate.lua would have answered it, in its place. */
  decide(
    keys: EventKeys, eventId: string, userId: string, requestId: string, checkedNodes: string, minReplicas: string,
    replicaMaxLagS: string, attemptId: string,
  ): Promise<GateReply> {
    let batch = this.#batches.current(eventId);
    // A change of the checked nodes (a Cluster node compared since) starts a batch of its own: one call, one list.
    if (batch && (batch.checkedNodes !== checkedNodes || batch.minReplicas !== minReplicas)) {
      this.#batches.send(eventId, batch);
      batch = undefined;
    }
    batch ??= this.#batches.start(eventId, { keys, eventId, checkedNodes, minReplicas, replicaMaxLagS, args: [], callers: [] });
    const caller = Promise.withResolvers<GateReply>();
    batch.args.push(userId, requestId, attemptId);
    batch.callers.push(caller);
    if (batch.callers.length >= this.#maxBatch) this.#batches.send(eventId, batch);
    return caller.promise;
  }

  /** Sends the batches that have filled for longer than MAX_AGE_MS (turn-batches.ts). */
  sendIfOlder(now: number): void {
    this.#batches.sendIfOlder(now);
  }

  #send(batch: Pending): void {
    const { keys, callers } = batch;
    this.calls += 1;
    this.requests += callers.length;
    this.#redis.gateBatch(
      keys.meta, keys.issued, keys.users, keys.outbox, batch.eventId, batch.checkedNodes, batch.minReplicas, batch.replicaMaxLagS,
      ...batch.args,
    ).then(
      (reply) => answerEach(reply, callers),
      // No reply: the script may have run, or may yet (a re-send). Each caller settles on its own (gate.ts).
      (error: unknown) => { for (const caller of callers) caller.reject(error); },
    );
  }
}

/** gate-batch.lua's reply, `{node, code1, sequence1, issuedAtMs1, ...}`, split into gate.lua's replies. */
export function splitBatchReply(reply: ReadonlyArray<string | number>, count: number): GateReply[] {
  if (reply.length !== 1 + 3 * count) throw new Error(`gate-batch.lua answered ${reply.length} values for ${count} requests`);
  const node = String(reply[0]);
  const ack: BatchAck = {};
  const replies: GateReply[] = [];
  for (let i = 0; i < count; i++) {
    const at = 1 + 3 * i;
    replies.push([Number(reply[at]), Number(reply[at + 1]), Number(reply[at + 2]), node, ack]);
  }
  return replies;
}

function answerEach(reply: ReadonlyArray<string | number>, callers: Array<PromiseWithResolvers<GateReply>>): void {
  let replies: GateReply[];
  try {
    replies = splitBatchReply(reply, callers.length);
  } catch (error) {
    for (const caller of callers) caller.reject(error);
    return;
  }
  for (let i = 0; i < callers.length; i++) callers[i]!.resolve(replies[i]!);
}
