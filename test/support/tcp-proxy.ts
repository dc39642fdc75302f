/**
 * A TCP proxy on loopback for fault tests: forwards every connection to a target port, and can freeze the
 * connections it holds at one moment. A frozen connection stays open (no FIN, no RST) but carries nothing more in
 * either direction, as a vanished node, a hung proxy or a partition looks to a client; connections opened after
 * the freeze pass normally.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** connections currently forwarded (not frozen, not closed) */
  readonly liveConnections: number;
  /** Silences every connection open now; later connections pass. Returns how many were frozen. */
  freezeExisting(): number;
  /** Closes everything, frozen connections included. */
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  const host = target.host ?? '127.0.0.1';
  const live = new Set<[Socket, Socket]>();
  const frozen = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, host);
    const pair: [Socket, Socket] = [client, upstream];
    live.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    get liveConnections() {
      return live.size;
    },
    freezeExisting() {
      const count = live.size;
      for (const pair of live) {
        for (const socket of pair) {
          socket.unpipe();
          socket.removeAllListeners('data');
          // Read and drop whatever still arrives, so neither kernel buffer fills and nothing reaches the other side.
          socket.on('data', () => undefined);
          socket.removeAllListeners('close');
          socket.removeAllListeners('error');
          socket.on('error', () => undefined);
          frozen.add(socket);
        }
      }
      live.clear();
      return count;
    },
    async close() {
      for (const pair of live) for (const socket of pair) socket.destroy();
      for (const socket of frozen) socket.destroy();
      live.clear();
      frozen.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
