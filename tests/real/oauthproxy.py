"""A loopback stand-in for Claude Code's OAuth token endpoint.

TestCA makes, with the `openssl` command line, a throw-away certificate
authority and a server certificate for the OAuth host(s); Claude Code is
told to trust the CA through NODE_EXTRA_CA_CERTS.  TokenProxy is an HTTP
proxy on 127.0.0.1 (HTTPS_PROXY=http://127.0.0.1:PORT) that accepts
`CONNECT <oauth host>:443`, terminates TLS itself with that certificate and
answers `POST /v1/oauth/token` with new dummy tokens; it refuses (and
records) every other CONNECT, every plain-HTTP request and every other path,
so nothing leaves the machine.  Each refresh is recorded with the refresh
token it presented.
"""
import json
import os
import socket
import ssl
import subprocess
import threading
import time

# Measured on 2.1.337: TOKEN_URL is https://platform.claude.com/v1/oauth/token.
OAUTH_HOSTS = ("platform.claude.com",)
TOKEN_PATH = "/v1/oauth/token"


class TestCA(object):
    def __init__(self, directory, hosts=OAUTH_HOSTS):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_cert = os.path.join(directory, "ca.pem")
        self.cert = os.path.join(directory, "server.pem")
        self.key = os.path.join(directory, "server.key")
        ca_key = os.path.join(directory, "ca.key")
        csr = os.path.join(directory, "server.csr")
        ext = os.path.join(directory, "server.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % ",".join("DNS:" + h for h in hosts))
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *argv: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,  # noqa: E731
                                           stderr=subprocess.PIPE, timeout=30)
        run("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", self.ca_cert, "-days", "2",
            "-subj", "/CN=csdeploy realtests throw-away CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("openssl", "req", *ec, "-keyout", self.key, "-out", csr, "-subj", "/CN=" + hosts[0])
        run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", ca_key,
            "-CAcreateserial", "-out", self.cert, "-days", "2", "-extfile", ext)


class TokenProxy(object):
    def __init__(self, ca, hosts=OAUTH_HOSTS, delay=0.0):
        self.hosts = set(hosts)
        self.delay = delay  # seconds before each token answer: widens any race
        self.lock = threading.Lock()
        self.refreshes = []  # one dict per POST /v1/oauth/token: the JSON body and our answer
        self.refused = []    # what else was asked: ("CONNECT", "host:port") / ("GET", url) / ...
        self.ctx = None  # no CA: every CONNECT is refused
        if ca is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(ca.cert, ca.key)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._stop = False
        self._conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ serving
    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn):
        try:
            conn.settimeout(30)  # may fail: close() closes every connection at the end of a test
            head, rest = _read_head(conn, b"")
            if head is None:
                return
            method, target = head[0].split(" ")[:2]
            if method != "CONNECT":
                self._refuse((method, target))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            host = target.rsplit(":", 1)[0]
            if host not in self.hosts or not target.endswith(":443") or self.ctx is None:
                self._refuse(("CONNECT", target))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            buf = rest
            while True:
                head, buf = _read_head(tls, buf)
                if head is None:
                    return
                headers = _headers(head[1:])
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    data = tls.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                method, path = head[0].split(" ")[:2]
                if method == "POST" and path.split("?")[0] == TOKEN_PATH:
                    status, answer = self._token(host, headers, body)
                else:
                    self._refuse((method, "https://%s%s" % (host, path)))
                    status, answer = "404 Not Found", {"error": "not_found"}
                payload = json.dumps(answer).encode()
                tls.sendall(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % (status, len(payload))).encode() + payload)
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _token(self, host, headers, body):
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {"unparsed": body.decode("utf-8", "replace")}
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            n = len(self.refreshes) + 1
            answer = {"access_token": "sk-ant-oat01-realtests-new-access-%d" % n,
                      "refresh_token": "sk-ant-ort01-realtests-new-refresh-%d" % n,
                      "expires_in": 28800, "token_type": "Bearer",
                      "scope": request.get("scope") or "user:inference user:profile"}
            self.refreshes.append({"host": host, "request": request, "answer": answer,
                                   "content_type": headers.get("content-type"), "time": time.time()})
        if request.get("grant_type") != "refresh_token":
            return "400 Bad Request", {"error": "unsupported_grant_type"}
        return "200 OK", answer

    def _refuse(self, what):
        with self.lock:
            self.refused.append(what)

    # ------------------------------------------------------------ use
    def environ(self, ca):
        """What a client needs to reach us: proxy for http(s), our CA trusted,
        loopback itself not proxied (so a closed ANTHROPIC_BASE_URL fails at once)."""
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url,
                "HTTP_PROXY": self.url, "http_proxy": self.url,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                **({"NODE_EXTRA_CA_CERTS": ca.ca_cert} if ca is not None else {})}

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


def _read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, buf
        buf += data
        if len(buf) > 1 << 20:
            raise ValueError("request head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1").split("\r\n"), rest


def _headers(lines):
    out = {}
    for line in lines:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out
