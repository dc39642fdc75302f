import calculateSlot from 'cluster-key-slot';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { GateStateKeeper } from './gate-state.ts';
import type { CouponRedis } from './redis/client.ts';
import { allPrimariesChecked, isCluster, nodeName } from './redis/topology.ts';

/**
 * The api's side: issue only on a server (on a Cluster: the shard of the event) that has been checked. A server's
 * flag drops the moment its connection closes (the next server may be a promoted replica or a restarted one) and
 * rises once the keeper has checked the server now connected: within about a second, or as long as a repair
 * takes. A Cluster's shards are also re-verified every second: a primary demoted in a failover keeps its
 * connection open, and the slot map then names a new primary, one not checked yet.
 */
export class CheckedServer {
  readonly #redis: CouponRedis;
  readonly #keeper: GateStateKeeper;
  readonly #logger: Logger;
  /** the primaries checked and not disconnected since: name -> Cluster node id */
  #checked = new Map<string, string>();
  /** their node ids, comma-separated, on a Cluster: what the gate script checks where it runs ('' on one server) */
  #checkedNodes = '';
  #everChecked = false;
  /** bumped on every close, so a check that began on the previous connection cannot vouch for the next */
  #connection = 0;
  #polling = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(redis: CouponRedis, keeper: GateStateKeeper, logger: Logger) {
    this.#redis = redis;
    this.#keeper = keeper;
    this.#logger = logger;
  }

  /** Whether the server holding `key` (any key of the event) has been checked. */
  checkedFor(key: string): boolean {
    if (!isCluster(this.#redis)) return this.#checked.size > 0;
    const owner = this.#redis.slots[calculateSlot(key)]?.[0];
    return owner !== undefined && this.#checked.has(owner);
  }

  /**
   * On a Cluster, the node ids of the checked primaries, for the gate script: the client may follow a redirect to
   * another primary than the one checkedFor() looked at, and the script then refuses to run there. '' on one server.
   */
  get checkedNodes(): string {
    return this.#checkedNodes;
  }

  /** The name (host:port) of the checked primary with this Cluster node id, as the gate script returns it. */
  nameOf(nodeId: string): string | undefined {
    for (const [name, id] of this.#checked) if (id === nodeId) return name;
    return undefined;
  }

  /** Whether any server was checked since this process started: until then it is not ready for traffic. */
  get everChecked(): boolean {
    return this.#everChecked;
  }

  start(): void {
    const redis = this.#redis;
    if (isCluster(redis)) {
      const watch = (node: Redis) => {
        node.on('close', () => this.#closed(nodeName(node)));
        node.on('ready', () => void this.#poll());
      };
      redis.nodes('all').forEach(watch);
      redis.on('+node', watch);
      this.#timer = setInterval(() => void this.#poll(), 1_000);
    } else {
      redis.on('close', () => this.#closed(undefined));
    }
    redis.on('ready', () => void this.#poll());
    if (redis.status === 'ready') void this.#poll();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  /**
   * A connection closed: that server (or, without a name, every server) is unchecked until checked again, once a
   * connection is ready (a check against a server that is away would only fail and wait).
   */
  #closed(name: string | undefined): void {
    this.#connection += 1;
    if (name === undefined) this.#checked.clear();
    else this.#checked.delete(name);
    this.#setChecked(this.#checked);
  }

  #setChecked(checked: Map<string, string>): void {
    this.#checked = checked;
    this.#checkedNodes = isCluster(this.#redis) ? [...checked.values()].join(',') : '';
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#stopped) return;
    this.#polling = true;
    try {
      for (let done = false; !done && !this.#stopped;) {
        const connection = this.#connection;
        try {
          const checked = await this.#keeper.checkPrimaries();
          if (connection === this.#connection) {
            this.#setChecked(checked);
            if (checked.size > 0) this.#everChecked = true;
            done = allPrimariesChecked(this.#redis, checked);
          }
        } catch (error) {
          this.#logger.debug({ err: error }, 'gate state check failed; retrying');
        }
        if (!done) await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } finally {
      this.#polling = false;
    }
  }
}
