"""The one Synapse launcher: a throwaway homeserver on 127.0.0.1 for the chat tests, the
benchmarks (`vigil-bench chat`, `vigil-bench alert`) and the chaos soak's Matrix chat. SQLite,
no federation (trusted_key_servers: []), registration only through the shared secret, rate
limits lifted, presence off. Uses an installed venv ($VIGIL_SYNAPSE_VENV or .venv-synapse,
made by scripts/setup-synapse); never installs one itself.

The Swift fixture (Sources/VigilTestSupport/SynapseServer.swift) runs this file as a small CLI
rather than keeping its own copy of the configuration, the launcher and the registration MAC:

  synapse.py prepare --dir DIR --venv VENV   writes DIR/homeserver.yaml for a free port and
                                             generates the signing key; prints JSON
                                             {"dir", "config", "log", "port", "base_url",
                                              "server_name", "secret"}
  synapse.py serve CONFIG                    (run with the venv's python) runs Synapse in this
                                             interpreter; exits when its parent process dies
  synapse.py register --base-url URL --secret S --user NAME [--password PW] [--admin]
                                             registers through the shared-secret admin API
                                             (HMAC-SHA1); prints JSON {"user_id",
                                             "access_token", "password"}
"""
import argparse
import hashlib
import hmac
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SERVER_NAME = "vigil.test"
HERE = os.path.abspath(__file__)

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_venv(repo):
    v = os.environ.get("VIGIL_SYNAPSE_VENV") or os.path.join(repo, ".venv-synapse")
    ok = os.path.exists(os.path.join(v, ".vigil-synapse-ok")) and os.access(os.path.join(v, "bin", "python"), os.X_OK)
    return v if ok else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _tail(log, n=6):
    try:
        with open(log) as f:
            return " | ".join(f.read().splitlines()[-n:])
    except OSError:
        return ""


def prepare(d, venv, secret=None):
    """Writes d/homeserver.yaml (free port, fresh secrets) and generates the signing key.
    Returns what a client needs: config, log, port, base_url, server_name, secret."""
    os.makedirs(d, exist_ok=True)
    port = free_port()
    secret = secret or "vigil-test-" + "%016x" % random.getrandbits(64)
    u = "{per_second: 100000, burst_count: 100000}"
    cfg = f"""server_name: "{SERVER_NAME}"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
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
registration_shared_secret: "{secret}"
macaroon_secret_key: "{secret}-macaroon"
form_secret: "{secret}-form"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: false
enable_registration_without_verification: false
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
rc_admin_redaction: {u}
"""
    conf = os.path.join(d, "homeserver.yaml")
    with open(conf, "w") as f:
        f.write(cfg)
    log = os.path.join(d, "homeserver.log")
    py = os.path.join(venv, "bin", "python")
    with open(log, "a") as lf:
        rc = subprocess.call([py, "-m", "synapse.app.homeserver", "-c", conf, "--generate-keys"],
                             stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, cwd=d)
    if rc != 0:
        raise RuntimeError(f"synapse --generate-keys failed: {_tail(log)}")
    return {"dir": d, "config": conf, "log": log, "port": port, "base_url": f"http://127.0.0.1:{port}",
            "server_name": SERVER_NAME, "secret": secret}


def serve(conf):
    """Runs Synapse in this interpreter (the venv's python) and exits when the parent goes
    away: no homeserver outlives a crashed test run or soak."""
    import runpy
    import threading
    # This file is named synapse.py: its directory must not be where `synapse` is imported from.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(HERE)]
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
    sys.argv = ["synapse.app.homeserver", "-c", conf]
    runpy.run_module("synapse.app.homeserver", run_name="__main__")


def call(base, method, path, token=None, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with _opener.open(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}")


def register(base, secret, localpart, password=None, admin=False):
    """Shared-secret registration: HMAC-SHA1 over nonce, name, password and the admin flag."""
    pw = password or "pw-%012x" % random.getrandbits(48)
    nonce = call(base, "GET", "/_synapse/admin/v1/register")["nonce"]
    msg = b"\0".join([nonce.encode(), localpart.encode(), pw.encode(), b"admin" if admin else b"notadmin"])
    mac = hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()
    r = call(base, "POST", "/_synapse/admin/v1/register",
             body={"nonce": nonce, "username": localpart, "password": pw, "admin": admin, "mac": mac})
    return {"user_id": r["user_id"], "access_token": r["access_token"], "password": pw}


class Synapse:
    """The soak's handle on a server: prepare + serve as a child process, plus client calls."""
    server_name = SERVER_NAME

    def __init__(self, venv, work):
        self.venv = venv
        self.dir = os.path.join(work, "synapse")
        self.proc = None
        self.info = prepare(self.dir, venv)
        self.port = self.info["port"]
        self.base = self.info["base_url"]
        self.secret = self.info["secret"]
        self.log = self.info["log"]

    def start(self, timeout=120):
        py = os.path.join(self.venv, "bin", "python")
        self.proc = subprocess.Popen([py, HERE, "serve", self.info["config"]], cwd=self.dir, stdin=subprocess.DEVNULL,
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
        return _tail(self.log, n)

    def call(self, method, path, token=None, body=None, timeout=30):
        return call(self.base, method, path, token, body, timeout)

    def register(self, localpart, password=None, admin=False):
        r = register(self.base, self.secret, localpart, password, admin)
        return {"id": r["user_id"], "token": r["access_token"], "password": r["password"]}

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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="synapse.py", description="The one Synapse launcher (see the module docstring).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write a config and keys; print JSON")
    p.add_argument("--dir", required=True)
    p.add_argument("--venv", required=True)
    s = sub.add_parser("serve", help="run Synapse (with the venv's python) until the parent dies")
    s.add_argument("config")
    r = sub.add_parser("register", help="register a user with the shared secret; print JSON")
    r.add_argument("--base-url", required=True)
    r.add_argument("--secret", required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password")
    r.add_argument("--admin", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "prepare":
            print(json.dumps(prepare(os.path.abspath(a.dir), a.venv)))
        elif a.cmd == "serve":
            serve(a.config)
        else:
            print(json.dumps(register(a.base_url, a.secret, a.user, a.password, a.admin)))
    except (RuntimeError, OSError, KeyError) as e:
        sys.stderr.write("synapse.py: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
