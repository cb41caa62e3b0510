#!/usr/bin/env node
'use strict';
// A tiny order service for the walkthrough: POST /orders answers 201 with the
// stored order. A repeated Idempotency-Key gets the first answer back (no new
// order), like a payment API. PORT (default 9090). Ctrl-C stops it.
const http = require('node:http');

const port = Number(process.env.PORT || 9090);
const byKey = new Map();
let next = 1;

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const key = req.headers['idempotency-key'] || null;
    const send = (status, payload) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    };
    if (req.method !== 'POST' || req.url !== '/orders') return send(404, { error: 'not found' });
    if (key && byKey.has(key)) {
      console.log(`POST /orders key=${key} -> 201 (replayed ${byKey.get(key).orderId})`);
      return send(201, byKey.get(key));
    }
    let order;
    try {
      order = JSON.parse(body || 'null');
    } catch {
      return send(400, { error: 'body is not JSON' });
    }
    const created = { orderId: `ord_${next++}`, received: order };
    if (key) byKey.set(key, created);
    console.log(`POST /orders key=${key} -> 201 ${created.orderId} ${JSON.stringify(order)}`);
    send(201, created);
  });
});

server.listen(port, '127.0.0.1', () => console.log(`order service listening on http://127.0.0.1:${port}/orders`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
