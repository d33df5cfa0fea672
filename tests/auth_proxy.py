"""A checking proxy in front of an MLflow server, for the authentication test: every request
must carry `Authorization: Basic base64(USER:PASSWORD)` or `Bearer TOKEN`, else 401; the
others are forwarded to the server unchanged. Python's standard library only.

With CERT and KEY (PEM files), it serves HTTPS with them.

Usage: python auth_proxy.py PORT UPSTREAM_URL USER PASSWORD TOKEN [CERT KEY]
"""
import base64
import ssl
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream, user, password, token = sys.argv[1:6]
accepted = {
    "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
    "Bearer " + token,
}


class Proxy(BaseHTTPRequestHandler):
    def forward(self):
        if self.headers.get("Authorization") not in accepted:
            body = b'{"error_code": "UNAUTHENTICATED", "message": "wrong credentials"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        req = urllib.request.Request(upstream + self.path, data=data, method=self.command)
        if self.headers.get("Content-Type"):
            req.add_header("Content-Type", self.headers["Content-Type"])
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = forward

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(port)), Proxy)
if len(sys.argv) > 7:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[6], sys.argv[7])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
