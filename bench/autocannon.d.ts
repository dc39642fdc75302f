/** The part of autocannon's API the load generator uses (autocannon ships no types). */
declare module 'autocannon' {
  interface Result {
    errors: number;
    timeouts: number;
    requests: { sent: number };
  }
  interface Instance extends PromiseLike<Result> {
    on(event: 'response', listener: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void): Instance;
    stop(): void;
  }
  function autocannon(options: Record<string, unknown>): Instance;
  export default autocannon;
}
