"""A throwaway Synapse homeserver on 127.0.0.1 for the chaos soak's Matrix chat (the same
set-up as the Swift test fixture, Sources/VigilChat/Synapse/SynapseServer.swift): SQLite,
no federation (trusted_key_servers: []), registration only through the shared secret, rate
limits lifted. Uses an installed venv ($VIGIL_SYNAPSE_VENV or .venv-synapse, made by
scripts/setup-synapse); never installs one itself.
"""
import hashlib
import hmac
import json
import os
import random
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

LAUNCHER = """
import os, sys, threading, time, runpy
parent = os.getppid()
def watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["synapse.app.homeserver"] + sys.argv[1:]
runpy.run_module("synapse.app.homeserver", run_name="__main__")
"""

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_venv(repo):
    v = os.environ.get("VIGIL_SYNAPSE_VENV") or os.path.join(repo, ".venv-synapse")
    ok = os.path.exists(os.path.join(v, ".vigil-synapse-ok")) and os.access(os.path.join(v, "bin", "python"), os.X_OK)
    return v if ok else None


class Synapse:
    server_name = "vigil.test"

    def __init__(self, venv, work):
        self.venv = venv
        self.dir = os.path.join(work, "synapse")
        os.makedirs(self.dir, exist_ok=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.base = f"http://127.0.0.1:{self.port}"
        self.secret = "vigil-chaos-" + "%016x" % random.getrandbits(64)
        self.proc = None
        self.log = os.path.join(self.dir, "homeserver.log")

    def start(self, timeout=120):
        u = "{per_second: 100000, burst_count: 100000}"
        d = self.dir
        cfg = f"""server_name: "{self.server_name}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {self.port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
media_store_path: {d}/media
signing_key_path: {d}/signing.key
registration_shared_secret: "{self.secret}"
macaroon_secret_key: "{self.secret}-macaroon"
form_secret: "{self.secret}-form"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: false
presence:
  enabled: false
url_preview_enabled: false
rc_message: {u}
rc_registration: {u}
rc_login:
  address: {u}
  account: {u}
  failed_attempts: {u}
rc_joins:
  local: {u}
  remote: {u}
rc_invites:
  per_room: {u}
  per_user: {u}
  per_issuer: {u}
"""
        conf = os.path.join(d, "homeserver.yaml")
        with open(conf, "w") as f:
            f.write(cfg)
        py = os.path.join(self.venv, "bin", "python")
        with open(self.log, "a") as lf:
            rc = subprocess.call([py, "-m", "synapse.app.homeserver", "-c", conf, "--generate-keys"], stdout=lf, stderr=lf)
        if rc != 0:
            raise RuntimeError(f"synapse --generate-keys failed: {self.tail()}")
        self.proc = subprocess.Popen([py, "-c", LAUNCHER, "-c", conf], cwd=d, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with _opener.open(self.base + "/_matrix/client/versions", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"synapse exited during start-up: {self.tail()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"synapse did not answer within {timeout}s: {self.tail()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # our own child, not reaped: its PID is still ours
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n=6):
        try:
            with open(self.log) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def call(self, method, path, token=None, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with _opener.open(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}")

    def register(self, localpart, password=None, admin=False):
        pw = password or "pw-%012x" % random.getrandbits(48)
        nonce = self.call("GET", "/_synapse/admin/v1/register")["nonce"]
        msg = b"\0".join([nonce.encode(), localpart.encode(), pw.encode(), b"admin" if admin else b"notadmin"])
        mac = hmac.new(self.secret.encode(), msg, hashlib.sha1).hexdigest()
        r = self.call("POST", "/_synapse/admin/v1/register",
                      body={"nonce": nonce, "username": localpart, "password": pw, "admin": admin, "mac": mac})
        return {"id": r["user_id"], "token": r["access_token"], "password": pw}

    def create_room(self, user, invite):
        return self.call("POST", "/_matrix/client/v3/createRoom", token=user["token"],
                         body={"preset": "private_chat", "invite": invite, "name": "vigil chaos"})["room_id"]

    def send(self, user, room, text):
        txn = "chaos-%016x" % random.getrandbits(64)
        path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room, safe='')}/send/m.room.message/{txn}"
        return self.call("PUT", path, token=user["token"], body={"msgtype": "m.text", "body": text})["event_id"]

    def messages(self, user, room):
        """Every m.room.message event of the room, oldest first."""
        out, frm = [], None
        q = urllib.parse.quote(room, safe="")
        for _ in range(1000):
            params = {"dir": "f", "limit": "500"}
            if frm:
                params["from"] = frm
            r = self.call("GET", f"/_matrix/client/v3/rooms/{q}/messages?" + urllib.parse.urlencode(params), token=user["token"])
            out += [e for e in r.get("chunk", []) if e.get("type") == "m.room.message"]
            if not r.get("chunk") or not r.get("end") or r.get("end") == frm:
                break
            frm = r["end"]
        return out
