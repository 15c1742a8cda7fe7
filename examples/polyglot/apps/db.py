"""DB (Python, standard library only): GET /query answers a row.

Run by examples/polyglot behind coordsidecar: it listens on 127.0.0.1:$PORT
(0: any free port, printed as "listening PORT") and appends "txn service
version" to $RECORD_FILE for every request it serves. It calls nobody, so it
has no headers to copy.
"""
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE, VERSION = "db", os.environ.get("VERSION", "v1")

_record_lock = threading.Lock()
_record = open(os.environ["RECORD_FILE"], "a", encoding="utf-8")


def record(txn):
    with _record_lock:
        _record.write(f"{txn} {SERVICE} {VERSION}\n")
        _record.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart

    def do_GET(self):
        record(self.headers.get("x-coordinator-txn", "-"))
        status, body = (200, b"row") if self.path.startswith("/query") else (404, b"not found")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 128
    print("listening", srv.server_address[1], flush=True)
    srv.serve_forever()
