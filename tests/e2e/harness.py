"""End-to-end harness: runs a real `skiff server` and drives it with the real kubectl.

One server per test module (see ServerTestCase): a fresh temp data dir, a free loopback port,
a private HOME so kubectl's discovery/openapi caches never leak between runs. The server is
killed by PID on teardown, also when setUpClass fails half-way, and at interpreter exit.

Environment:
  SKIFF_BIN        the skiff binary (default: <repo>/build/skiff)
  SKIFF_E2E_KEEP   keep the temp dir (server log, kubeconfig) after the run
"""

import atexit
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIFF_BIN = os.environ.get("SKIFF_BIN") or os.path.join(REPO, "build", "skiff")

GCLOUD_BIN = "/usr/lib/google-cloud-sdk/bin"
DISPATCHER = "/usr/bin/kubectl"


def _find_kubectl():
    """Returns (mode, path). mode "modern": the gcloud dispatcher with kubectl 1.27-1.33;
    "legacy": a plain Debian machine with kubernetes-client (kubectl 1.20) only; None: no kubectl."""
    if os.path.exists(DISPATCHER) and os.path.exists(os.path.join(GCLOUD_BIN, "kubectl.1.32")):
        return "modern", DISPATCHER
    for cand in (DISPATCHER, shutil.which("kubectl") or ""):
        if cand and os.path.exists(cand):
            return "legacy", cand
    return None, None


KUBECTL_MODE, KUBECTL = _find_kubectl()


def versioned_kubectls():
    """The kubectl.1.XX binaries installed next to the dispatcher, as {"1.29": path}."""
    out = {}
    if os.path.isdir(GCLOUD_BIN):
        for name in sorted(os.listdir(GCLOUD_BIN)):
            m = re.fullmatch(r"kubectl\.(1\.\d+)", name)
            if m:
                out[m.group(1)] = os.path.join(GCLOUD_BIN, name)
    return out


_announced = False


def _announce(minor):
    global _announced
    if _announced:
        return
    _announced = True
    if KUBECTL_MODE == "modern":
        target = os.path.join(GCLOUD_BIN, "kubectl.1.%s" % minor)
        if not os.path.exists(target):
            target = "its bundled v1.32"
        msg = "e2e: driving %s (gcloud dispatcher; server minor %s -> %s); versioned: %s" % (
            DISPATCHER, minor, target, ", ".join(sorted(versioned_kubectls())))
    elif KUBECTL_MODE == "legacy":
        msg = ("e2e: /usr/lib/google-cloud-sdk kubectl missing; driving Debian's %s (kubectl 1.20) "
               "for the minimal smoke subset only; the rest is skipped" % KUBECTL)
    else:
        msg = "e2e: no kubectl found; kubectl tests are skipped"
    print(msg, file=sys.stderr, flush=True)


def requires_modern_kubectl(obj):
    return unittest.skipUnless(KUBECTL_MODE == "modern",
                               "needs the gcloud kubectl 1.27-1.33 (found: %s)" % KUBECTL_MODE)(obj)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_live_servers = set()


def _die_with_parent():
    """preexec_fn: SIGKILL the child if this test process dies (e.g. a ctest timeout kill),
    so no server outlives its test run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_process(proc, grace=10):
    """Ends a child this test started: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    except ProcessLookupError:
        pass


@atexit.register
def _kill_leftovers():
    for srv in list(_live_servers):
        srv.stop()


class Server:
    """A `skiff server` child process with its own data dir."""

    def __init__(self, extra_args=(), token_file_lines=None, subcommand="server", agent=False):
        self.extra_args = list(extra_args)
        self.agent = agent  # run the node agent (kubelet) too; see node.py
        self.token_file_lines = token_file_lines
        self.subcommand = subcommand
        self.proc = None
        self.dir = None
        self.port = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, timeout=30):
        if not os.access(SKIFF_BIN, os.X_OK):
            raise RuntimeError("skiff binary not found at %s (set SKIFF_BIN)" % SKIFF_BIN)
        self.dir = tempfile.mkdtemp(prefix="skiff-e2e-")
        _live_servers.add(self)
        try:
            self.data_dir = os.path.join(self.dir, "data")
            self.home = os.path.join(self.dir, "home")
            self.work = os.path.join(self.dir, "work")
            for d in (self.data_dir, self.home, self.work):
                os.makedirs(d)
            args = list(self.extra_args)
            if self.token_file_lines is not None:
                self.token_file = os.path.join(self.dir, "tokens.csv")
                with open(self.token_file, "w") as f:
                    f.write("\n".join(self.token_file_lines) + "\n")
                args += ["--token-auth-file", self.token_file]
            help_text = subprocess.run([SKIFF_BIN, self.subcommand, "--help"], capture_output=True,
                                       text=True, timeout=10).stdout
            if "--disable-agent" in help_text and not self.agent:
                args.append("--disable-agent")  # these tests need no kubelet
                if "--disable-dns" in help_text:
                    args.append("--disable-dns")  # nor a DNS server on the host's port 53
            self.args = args
            self._launch(timeout, new_port=True)
            self.kubeconfig = os.path.join(self.data_dir, "admin.kubeconfig")
            self.ca = os.path.join(self.data_dir, "tls", "ca.crt")
            self.version_info = json.loads(self.request("GET", "/version")[2])
            _announce(self.version_info.get("minor"))
            return self
        except BaseException:
            self.stop()
            raise

    def _launch(self, timeout, new_port):
        last_err = None
        for _attempt in range(3):  # a port picked free can be taken before the server binds
            if new_port or self.port is None:
                self.port = free_port()
            self.log_path = os.path.join(self.dir, "server-%d.log" % self.port)
            cmd = [SKIFF_BIN, self.subcommand, "--data-dir", self.data_dir, "--bind-address",
                   "127.0.0.1", "--https-port", str(self.port)] + self.args
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
            try:
                self._wait_ready(timeout)
                return
            except Exception as e:  # noqa: BLE001
                last_err = e
                self._kill()
                new_port = True
        raise RuntimeError("skiff server did not become ready: %s\n--- log ---\n%s" %
                           (last_err, self.log_tail()))

    def restart(self, timeout=30):
        """Stops the server (SIGTERM) and starts it again on the same data dir and port."""
        self._kill()
        self._launch(timeout, new_port=False)

    def _wait_ready(self, timeout):
        kubeconfig = os.path.join(self.data_dir, "admin.kubeconfig")
        ca = os.path.join(self.data_dir, "tls", "ca.crt")
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with rc %s" % self.proc.returncode)
            if os.path.exists(kubeconfig) and os.path.exists(ca):
                try:
                    ctx = ssl.create_default_context(cafile=ca)
                    conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=2)
                    conn.request("GET", "/readyz")
                    resp = conn.getresponse()
                    body = resp.read()
                    conn.close()
                    if resp.status == 200:
                        return
                    last = "readyz %d %r" % (resp.status, body[:200])
                except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                    last = repr(e)
            time.sleep(0.1)
        raise RuntimeError("timed out waiting for /readyz (%s)" % last)

    def _kill(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def stop(self):
        self._kill()
        self.proc = None
        _live_servers.discard(self)
        if self.dir and os.path.isdir(self.dir):
            if os.environ.get("SKIFF_E2E_KEEP"):
                print("e2e: kept %s" % self.dir, file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- clients ---------------------------------------------------------------------------

    def kubectl_env(self, extra_env=None, kubeconfig=None):
        env = dict(os.environ)
        env["KUBECONFIG"] = kubeconfig or self.kubeconfig
        env["HOME"] = self.home  # ~/.kube/cache (discovery, openapi) stays private to this server
        env["KUBECACHEDIR"] = os.path.join(self.home, ".kube", "cache")
        env.pop("KUBE_EDITOR", None)
        env.pop("EDITOR", None)
        env.pop("HTTPS_PROXY", None)
        env.pop("https_proxy", None)
        env["NO_PROXY"] = "127.0.0.1"
        env["TMPDIR"] = self.work  # kubectl edit leaves its temp copies here; removed on teardown
        if extra_env:
            env.update(extra_env)
        return env

    def kubectl_path(self, version=None):
        if version is None:
            return KUBECTL
        return os.path.join(GCLOUD_BIN, "kubectl.%s" % version)

    def kubectl(self, *args, version=None, input=None, env=None, timeout=60, kubeconfig=None):
        """Runs kubectl; returns (rc, stdout, stderr) as text."""
        cmd = [self.kubectl_path(version)] + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                               env=self.kubectl_env(env, kubeconfig), cwd=self.work)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return 124, out, "kubectl timed out after %ss" % timeout
        return p.returncode, p.stdout, p.stderr

    def kubectl_popen(self, *args, version=None, env=None):
        cmd = [self.kubectl_path(version)] + [str(a) for a in args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.kubectl_env(env), cwd=self.work, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def request(self, method, path, body=None, headers=None, cert=True, token=None, timeout=30):
        """A raw HTTPS request (CA-verified). Returns (status, headers dict, body bytes)."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.data_dir, "tls", "ca.crt"))
        if cert:
            tls = os.path.join(self.data_dir, "tls")
            ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
        hdrs = {"Accept": "application/json"}
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = "Bearer " + token
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def request_streamed(self, method, path, body, content_type="application/json"):
        """Sends a (large) body over a raw TLS socket and reads the reply even if the server
        answers and closes before the body is fully sent (as for 413). Returns (status, body)."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.data_dir, "tls", "ca.crt"))
        tls = os.path.join(self.data_dir, "tls")
        ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                       "Accept: application/json\r\nContent-Length: %d\r\n\r\n" %
                       (method, path, content_type, len(body))).encode())
            try:
                for i in range(0, len(body), 65536):
                    s.sendall(body[i:i + 65536])
            except (OSError, ssl.SSLError):
                pass  # the server answered early and closed; read what it sent
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    head, sep, rest = data.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    if sep and m and len(rest) >= int(m.group(1)):
                        break
            except (OSError, ssl.SSLError):
                pass
        head, _, rest = data.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(m.group(1)) if m else None), rest

    def write(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path


# A module shares one server: it always has a token file too, which leaves client-certificate
# auth unchanged and lets the token tests run on the same server.
TOKENS = ['tok-admin-123,alice,uid-alice,"system:masters"',
          'tok-nobody-456,bob,uid-bob,""']
_shared = {}


def shared_server(extra_args=()):
    """The server shared by the calling test module; stopped by stop_shared() (tearDownModule)
    or, failing that, at exit."""
    key = tuple(extra_args)
    srv = _shared.get(key)
    if srv is None or not srv.alive():
        if srv is not None:
            srv.stop()
        srv = Server(extra_args, TOKENS).start()
        _shared[key] = srv
    return srv


def stop_shared():
    for srv in list(_shared.values()):
        srv.stop()
    _shared.clear()


class ServerTestCase(unittest.TestCase):
    """Uses the module's shared server. Test modules define tearDownModule = harness.stop_shared."""

    SERVER_ARGS = ()
    # API tests run the API server without the scheduler and controllers, so namespaces hold
    # only what the tests create; workload tests set this to False.
    API_ONLY = True
    server = None
    _counter = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        args = tuple(cls.SERVER_ARGS)
        if cls.API_ONLY:
            args += ("--disable-controller-manager", "--disable-scheduler")
        cls.server = shared_server(args)

    def setUp(self):
        if not self.server.alive():
            self.fail("skiff server died; log tail:\n" + self.server.log_tail())

    # ---- helpers ---------------------------------------------------------------------------

    @classmethod
    def uniq(cls, prefix):
        ServerTestCase._counter += 1
        return "%s-%d-%d" % (prefix, os.getpid() % 10000, ServerTestCase._counter)

    def kubectl(self, *args, **kw):
        return self.server.kubectl(*args, **kw)

    def ok(self, *args, **kw):
        """Runs kubectl and asserts rc 0; returns stdout."""
        rc, out, err = self.kubectl(*args, **kw)
        self.assertEqual(rc, 0, "kubectl %s failed (rc %d)\nstdout: %s\nstderr: %s" %
                         (" ".join(map(str, args)), rc, out, err))
        return out

    def fails(self, *args, **kw):
        """Runs kubectl and asserts rc 1; returns stdout+stderr."""
        rc, out, err = self.kubectl(*args, **kw)
        self.assertEqual(rc, 1, "kubectl %s: expected rc 1, got %d\nstdout: %s\nstderr: %s" %
                         (" ".join(map(str, args)), rc, out, err))
        return out + err

    def get_json(self, *args, **kw):
        return json.loads(self.ok("get", *args, "-o", "json", **kw))

    def create_json(self, obj, namespace=None):
        """Creates an object through `kubectl create -f - --validate=false` (a plain JSON POST:
        no OpenAPI, no protobuf), so fixtures do not depend on those features."""
        args = ["create", "-f", "-", "--validate=false"]
        if namespace:
            args += ["-n", namespace]
        return self.ok(*args, input=json.dumps(obj))

    def make_namespace(self, prefix="ns"):
        name = self.uniq(prefix)
        self.create_json({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def make_configmap(self, ns, name, data=None, labels=None):
        meta = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        self.create_json({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                          "data": data or {"k": "v"}})

    def make_pod(self, ns, name, labels=None, image="busybox:1.36"):
        meta = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        self.create_json({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                          "spec": {"containers": [{"name": "main", "image": image,
                                                   "command": ["sleep", "3600"]}]}})

    def make_deployment(self, ns, name, image="busybox:1.36", replicas=1):
        self.create_json({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}})
