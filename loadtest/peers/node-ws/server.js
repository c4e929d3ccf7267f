// A minimal WebSocket fan-out server backed by Redis pub/sub, written for
// the side-by-side benchmark (loadtest/compare.sh). It does what pulsegate's
// `/dashboard/ws/{persona}` does at its core and nothing more:
//   GET /sub/<persona>  (WebSocket) -> every message PUBLISHed on Redis
//   channel `pulse:{<persona>}:events` arrives verbatim as a text frame.
// One Redis subscriber connection; one subscription per persona that has at
// least one socket. Env: PORT (8092), HOST (127.0.0.1), REDIS_URL.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');
const { createClient } = require('redis');

const PORT = Number(process.env.PORT || 8092);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

const channelOf = (persona) => `pulse:{${persona}}:events`;
/** persona -> Set<WebSocket> */
const rooms = new Map();

async function main() {
  const sub = createClient({ url: REDIS_URL });
  sub.on('error', (e) => console.error('redis:', e.message));
  await sub.connect();

  const onMessage = (persona) => (message) => {
    const room = rooms.get(persona);
    if (!room) return;
    for (const ws of room) {
      if (ws.readyState === ws.OPEN) ws.send(message, { binary: false });
    }
  };

  const server = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

  server.on('upgrade', (req, socket, head) => {
    const m = /^\/sub\/([A-Za-z0-9_.-]{1,64})$/.exec(req.url);
    if (!m) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => join(ws, m[1]));
  });

  async function join(ws, persona) {
    let room = rooms.get(persona);
    if (!room) {
      room = new Set();
      rooms.set(persona, room);
      // Buffer mode: forward the payload bytes untouched.
      await sub.subscribe(channelOf(persona), onMessage(persona), true);
    }
    room.add(ws);
    ws.on('message', (data) => {
      if (data.toString() === '{"type":"ping"}') ws.send('{"type":"pong"}');
    });
    ws.on('close', () => {
      room.delete(ws);
      if (room.size === 0 && rooms.get(persona) === room) {
        rooms.delete(persona);
        sub.unsubscribe(channelOf(persona)).catch(() => {});
      }
    });
    ws.on('error', () => {});
  }

  server.listen(PORT, HOST, 4096, () => {
    console.log(`node-ws listening on ${HOST}:${PORT}, redis ${REDIS_URL}`);
  });
  const stop = () => {
    server.close();
    for (const room of rooms.values()) for (const ws of room) ws.terminate();
    sub.quit().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
