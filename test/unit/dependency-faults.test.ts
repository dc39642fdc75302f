import { isDependencyFault } from '../../src/dependency-faults.ts';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('telling an unreachable dependency from a refusal', () => {
  test.each([
    ['MySQL refusing connections', withCode('connect ECONNREFUSED 127.0.0.1:3306', 'ECONNREFUSED')],
    ['a MySQL connection lost mid-query', withCode('Connection lost: The server closed the connection.', 'PROTOCOL_CONNECTION_LOST')],
    ['a gate call that timed out', new Error('Command timed out')],
    ['Redis down with no offline queue', new Error("Stream isn't writeable and enableOfflineQueue options is false")],
    ['Redis loading its AOF after a restart', new Error('LOADING Redis is loading the dataset in memory')],
    ['a replica after a failover', new Error("READONLY You can't write against a read only replica.")],
    ['a full Redis with noeviction', new Error('OOM command not allowed when used memory > maxmemory.')],
    ['a primary short of replicas (min-replicas-to-write), in a script', new Error('NOREPLICAS Not enough good replicas to write. script: aa92f0f1, on @user_script:1.')],
    // The Cluster client follows a redirect itself, but not one met inside a pipeline of several slots (its
    // auto-pipelines group a node's commands): that one reaches the caller while a slot moves (the chaos schedules).
    ['a Cluster redirect the client did not follow (a slot moving)', new Error('MOVED 5461 127.0.0.1:34375')],
    ['a Cluster redirect to a slot being imported', new Error('ASK 5461 127.0.0.1:34375')],
    // An auto-pipeline grouped by node when queued, whose slots a failover gave to several nodes before it was
    // sent: the client refuses to send it at all (the chaos schedules, a failover during a replication cut).
    ['an auto-pipeline split by a failover before it was sent', new Error('All keys in the pipeline should belong to the same slots allocation group')],
    // GATE_MIN_REPLICAS: the WAIT after a gate's write, on a primary demoted while it waited (a CI trial's chaos run
    // of e8c8595, the kept sold-out-flag-after-a-flush schedule: a failover mid-burst answered one apply 500).
    ['a WAIT cut short by a failover', new Error('UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)')],
  ])('when the error is %s, then it is a dependency fault (503, retry the batch)', (_, error) => {
    expect(isDependencyFault(error)).toBe(true);
  });

  test.each([
    ['a malformed coupon whose user id mentions a pool', new Error('malformed coupon refused: {"userId":"pool-connect-1"}')],
    ['a MySQL trigger refusing a row', withCode('refused by test trigger', 'ER_SIGNAL_EXCEPTION')],
    ['a duplicate key', withCode("Duplicate entry 'x' for key 'PRIMARY'", 'ER_DUP_ENTRY')],
    ['a programming error', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['something that is not an Error', 'ECONNREFUSED'],
  ])('when the error is %s, then it is not a dependency fault', (_, error) => {
    expect(isDependencyFault(error)).toBe(false);
  });
});
