/**
 * Which errors mean "a backing service (Redis, MySQL) cannot be reached or cannot serve right now", as opposed to
 * a bug or a request the service refused. The api answers the first kind with 503; the worker retries a whole
 * batch later instead of splitting it row by row. Only error names, codes and the client libraries' own fixed
 * messages are looked at, never free text that could carry user data.
 */
const NAMES = new Set([
  'MaxRetriesPerRequestError', 'ConnectionException', 'GateTimeoutError', 'AbortError', 'TimeoutError', 'NotReplicatedError',
  // The gate state is being restored or was restored under a batch: retry the batch whole, later.
  'GateEpochChangedError', 'GateStateMissingError',
]);
const CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'ER_CON_COUNT_ERROR', 'ER_SERVER_SHUTDOWN', 'ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT',
]);
/**
 * ioredis's messages when it cannot send or hear back; and a Cluster auto-pipeline it refuses to send because a
 * failover or a move gave its slots to several nodes after its commands were queued (nothing of it ran)
 */
const REDIS_CLIENT_MESSAGE = /^(Command timed out|Connection is closed|Stream isn't writeable|Reached the max retries per request limit|All keys in the pipeline should belong to the same slots allocation group)/;
/**
 * Redis replies of a server that is up but cannot serve: restarting, a replica after failover, full, busy, a
 * blocked command (the gate's WAIT) cut short because the server changed role; and a Cluster's redirects, which
 * the client follows except inside a pipeline of several slots (its auto-pipelines), where one reaches the caller
 * while a slot moves
 */
const REDIS_UNAVAILABLE_REPLY = /^(LOADING|READONLY|OOM|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|UNBLOCKED|MOVED|ASK)\b/;

export function isDependencyFault(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return NAMES.has(error.name)
    || (typeof code === 'string' && CODES.has(code))
    || REDIS_CLIENT_MESSAGE.test(error.message)
    || REDIS_UNAVAILABLE_REPLY.test(error.message);
}
