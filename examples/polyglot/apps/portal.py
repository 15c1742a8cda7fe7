"""Portal (Python, standard library only): the entry point of the seed
scenario. GET / gets a token from Auth (T1), then has Proc process the
request with it (T2).

Run by examples/polyglot behind coordsidecar (--entry-point): it listens on
127.0.0.1:$PORT (0: any free port, printed as "listening PORT"), calls Auth at
$AUTH_ADDR and Proc at $PROC_ADDR (coordsidecar's dependency listeners), and
appends "txn service version" to $RECORD_FILE for every request it serves.
"""
import http.client
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE, VERSION = "portal", os.environ.get("VERSION", "v1")
AUTH, PROC = os.environ["AUTH_ADDR"], os.environ["PROC_ADDR"]

# The mesh's headers, which the application must copy from each inbound
# request to every outbound call it makes for it (as Istio asks of tracing
# headers): the sidecar cannot tell which request a call is made for. The
# tracing headers are copied too, to keep one trace.
MESH_HEADERS = ("x-coordinator-txn", "x-coordinator-sub")
TRACE_HEADERS = ("traceparent", "tracestate", "x-request-id", "b3", "x-b3-traceid",
                 "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")


def propagated(inbound):
    """The headers to copy from the inbound request's headers."""
    return {h: inbound[h] for h in MESH_HEADERS + TRACE_HEADERS if inbound.get(h)}


_record_lock = threading.Lock()
_record = open(os.environ["RECORD_FILE"], "a", encoding="utf-8")


def record(txn):
    """What this service saw: the transaction, served at this version."""
    with _record_lock:
        _record.write(f"{txn} {SERVICE} {VERSION}\n")
        _record.flush()


_conns = threading.local()


def get(addr, path, headers):
    """GET http://addr/path on a keep-alive connection of this thread;
    returns (status, body). A reused connection the server has closed is
    replaced once, as Go's and Node's clients do."""
    pool = _conns.__dict__.setdefault("pool", {})
    for attempt in (0, 1):
        conn = pool.get(addr)
        reused = conn is not None
        if conn is None:
            conn = pool[addr] = http.client.HTTPConnection(addr, timeout=30)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            del pool[addr]
            if not reused or attempt == 1:
                raise


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart

    def reply(self, status, body):
        b = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        record(self.headers.get("x-coordinator-txn", "-"))
        out = propagated(self.headers)  # copy the mesh headers to every call below
        try:
            # The "done" hint: this request will not call Auth again, so
            # that Auth may be updated sooner (the SDK's sidecar.Done).
            status, token = get(AUTH, "/token", {**out, "x-coordinator-done": "auth-service"})
            if status != 200:
                return self.reply(502, f"auth: {status} {token}")
            time.sleep(random.uniform(0, 0.003))  # work
            status, body = get(PROC, "/process?token=" + token, out)
            if status != 200:
                return self.reply(502, f"proc: {status} {body}")
        except OSError as e:
            return self.reply(502, f"portal: {e}")
        self.reply(200, "ok")

    def log_message(self, *args):
        pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 128
    print("listening", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
