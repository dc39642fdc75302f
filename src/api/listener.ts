/**
 * The api's listening socket with a cap on open connections. Each connection costs memory whether or not it
 * sends anything (a socket, its buffers, an HTTP parser), and an Ingress opens as many upstream connections as it
 * has clients: without a cap a burst of connections alone can outgrow the pod. Past `maxConnections` a new
 * connection gets a complete answer, `503` with Retry-After and `Connection: close`, and is closed; it never
 * reaches the HTTP server, and the client is told rather than reset (node's own `server.maxConnections` drops
 * the socket without a word).
 */
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { RETRY_AFTER_SECONDS } from './errors.ts';

const REFUSAL_BODY = JSON.stringify({ error: 'unavailable', message: 'the api has too many open connections; try again shortly' });
const REFUSAL = Buffer.from(
  'HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n'
  + `retry-after: ${RETRY_AFTER_SECONDS}\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(REFUSAL_BODY)}\r\n\r\n${REFUSAL_BODY}`,
);
/** how long a refused connection may keep sending (its request, read and dropped) before it is destroyed */
const REFUSED_LINGER_MS = 2_000;

export class CappedListener {
  readonly #http: HttpServer;
  readonly #maxConnections: number;
  readonly #tcp: TcpServer;
  #open = 0;
  #refused = 0;
  readonly #drained: Array<() => void> = [];

  constructor(http: HttpServer, maxConnections: number) {
    this.#http = http;
    this.#maxConnections = maxConnections;
    this.#tcp = createTcpServer((socket) => this.#accept(socket));
  }

  /** open connections handed to the HTTP server */
  get connections(): number {
    return this.#open;
  }

  /** connections refused since start */
  get refused(): number {
    return this.#refused;
  }

  listen(port: number, host?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#tcp.once('error', reject);
      this.#tcp.listen({ port, host, backlog: 4096 }, () => {
        this.#tcp.off('error', reject);
        // The HTTP server never listens itself; 'listening' starts its tracking of connections, which its
        // headersTimeout/requestTimeout and closeIdleConnections() rely on.
        this.#http.emit('listening');
        resolve();
      });
    });
  }

  /**
   * Stops accepting, then resolves once every connection has closed: idle ones are closed at once and again as
   * their answers finish, and whatever is still open after `timeoutMs` is cut.
   */
  close(timeoutMs: number): Promise<void> {
    this.#tcp.close();
    const idle = setInterval(() => this.#http.closeIdleConnections(), 50);
    const force = setTimeout(() => this.#http.closeAllConnections(), timeoutMs);
    this.#http.closeIdleConnections();
    return new Promise<void>((resolve) => {
      if (this.#open === 0) resolve();
      else this.#drained.push(resolve);
    }).finally(() => {
      clearInterval(idle);
      clearTimeout(force);
      // Stops the HTTP server's timeout checks (it has no socket of its own to close).
      this.#http.close();
    });
  }

  #accept(socket: Socket): void {
    if (this.#open >= this.#maxConnections) return this.#refuse(socket);
    this.#open++;
    socket.once('close', () => {
      this.#open--;
      if (this.#open === 0) for (const resolve of this.#drained.splice(0)) resolve();
    });
    this.#http.emit('connection', socket);
  }

  #refuse(socket: Socket): void {
    this.#refused++;
    socket.on('error', () => undefined);
    // Read and drop what the client sends, so that closing does not reset the connection under its answer.
    socket.resume();
    socket.end(REFUSAL);
    setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
  }
}
