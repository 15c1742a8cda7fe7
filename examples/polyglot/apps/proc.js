// Proc (Node.js, standard http): GET /process?token=T checks the token with
// Auth (T3), then reads DB (T4).
//
// Run by examples/polyglot behind coordsidecar: it listens on
// 127.0.0.1:$PORT (0: any free port, printed as "listening PORT"), calls Auth
// at $AUTH_ADDR and DB at $DB_ADDR (coordsidecar's dependency listeners), and
// appends "txn service version" to $RECORD_FILE for every request it serves.
'use strict';
const http = require('http');
const fs = require('fs');

const SERVICE = 'proc', VERSION = process.env.VERSION || 'v1';
const AUTH = process.env.AUTH_ADDR, DB = process.env.DB_ADDR;

// The mesh's headers, which the application must copy from each inbound
// request to every outbound call it makes for it (as Istio asks of tracing
// headers): the sidecar cannot tell which request a call is made for. The
// tracing headers are copied too, to keep one trace.
const MESH_HEADERS = ['x-coordinator-txn', 'x-coordinator-sub'];
const TRACE_HEADERS = ['traceparent', 'tracestate', 'x-request-id', 'b3', 'x-b3-traceid',
  'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'];
function propagated(req) {
  const out = {};
  for (const h of MESH_HEADERS.concat(TRACE_HEADERS)) {
    if (req.headers[h]) out[h] = req.headers[h]; // Node lower-cases header names
  }
  return out;
}

// What this service saw: the transaction, served at this version (written
// before the answer, so the checker finds it once the load has ended).
const recordFd = fs.openSync(process.env.RECORD_FILE, 'a');
function record(txn) {
  fs.writeSync(recordFd, `${txn} ${SERVICE} ${VERSION}\n`);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function get(addr, path, headers) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, headers, agent, timeout: 30000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer(async (req, res) => {
  record(req.headers['x-coordinator-txn'] || '-');
  const url = new URL(req.url, 'http://proc');
  if (url.pathname !== '/process') return reply(res, 404, 'not found');
  const out = propagated(req); // copy the mesh headers to every call below
  try {
    await new Promise((r) => setTimeout(r, Math.random() * 2)); // work
    // The "done" hint: this request will not call Auth again, so that Auth
    // may be updated sooner (the SDK's sidecar.Done).
    const v = await get(AUTH, '/validate?token=' + encodeURIComponent(url.searchParams.get('token') || ''),
      { ...out, 'x-coordinator-done': 'auth-service' });
    if (v.status !== 200) return reply(res, 502, `auth: ${v.status} ${v.body}`);
    const d = await get(DB, '/query', out);
    if (d.status !== 200) return reply(res, 502, `db: ${d.status} ${d.body}`);
    reply(res, 200, 'processed');
  } catch (e) {
    reply(res, 502, `proc: ${e.message}`);
  }
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log('listening', server.address().port);
});
