"""`kubectl logs` through a real skiff API server to a fake kubelet.

The fake kubelet is an HTTPS server in this process: it requires a client certificate issued
by the cluster CA (the API server's kubelet client certificate), records what it was asked and
answers like a kubelet's /containerLogs. A Node object points at it (InternalIP 127.0.0.1,
status.daemonEndpoints.kubeletEndpoint.Port); pods are bound to that node by spec.nodeName.
"""

import http.server
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

import harness
from harness import ServerTestCase, requires_modern_kubectl

tearDownModule = harness.stop_shared


class FakeKubelet:
    def __init__(self, ca_file):
        self.dir = tempfile.mkdtemp(prefix="skiff-fake-kubelet-")
        cert = os.path.join(self.dir, "kubelet.crt")
        key = os.path.join(self.dir, "kubelet.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=fake-kubelet", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca_file)
        self.requests = []
        self.lock = threading.Lock()
        self.follow_ended = threading.Event()
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                subject = dict(x[0] for x in self.connection.getpeercert().get("subject", ()))
                orgs = [v for rdn in self.connection.getpeercert().get("subject", ())
                        for k, v in rdn if k == "organizationName"]
                with kubelet.lock:
                    kubelet.requests.append((url.path, query, subject.get("commonName"), orgs))
                parts = url.path.split("/")
                if len(parts) != 5 or parts[1] != "containerLogs":
                    return self.answer(404, "404 page not found\n")
                pod, container = parts[3], parts[4]
                if (pod, container) == ("web", "broken"):
                    return self.answer(400, 'container "broken" in pod "web" is waiting to '
                                            'start: ContainerCreating')
                if (pod, container) not in (("web", "main"), ("web", "side")):
                    return self.answer(404, 'pod "%s" does not exist' % pod)
                if query.get("follow") != "true":
                    return self.answer(200, "hello from %s\nsecond line\n" % container)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i in range(1, 300):
                        data = ("line %d\n" % i).encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        time.sleep(0.1)
                except (OSError, ssl.SSLError):
                    kubelet.follow_ended.set()
                    self.close_connection = True

            def answer(self, code, text):
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def last(self):
        with self.lock:
            return self.requests[-1] if self.requests else None

    def count(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


@requires_modern_kubectl
class KubectlLogs(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.kubelet = FakeKubelet(cls.server.ca)
        t = cls("test_logs")
        cls.node = t.uniq("logs-node")
        status, _, body = cls.server.request("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": cls.node},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": cls.node}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": cls.kubelet.port}}}})
        assert status == 201, body
        cls.ns = t.make_namespace("logs")

        def pod(name, containers, node=cls.node):
            spec = {"containers": [{"name": c, "image": "busybox:1.36"} for c in containers]}
            if node:
                spec["nodeName"] = node
            t.create_json({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": cls.ns}, "spec": spec})

        pod("web", ["main", "broken"])
        pod("pending", ["app"], node=None)

    @classmethod
    def tearDownClass(cls):
        cls.kubelet.stop()
        super().tearDownClass()

    def logs(self, *args):
        return self.ok("logs", "-n", self.ns, *args)

    def test_logs(self):
        self.assertEqual(self.logs("web", "-c", "main"), "hello from main\nsecond line\n")
        path, query, cn, orgs = self.kubelet.last()
        self.assertEqual(path, "/containerLogs/%s/web/main" % self.ns)
        self.assertEqual(query, {})
        self.assertEqual(cn, "kube-apiserver-kubelet-client")
        self.assertEqual(orgs, ["system:masters"])

    def test_logs_options_reach_the_kubelet(self):
        self.logs("web", "-c", "main", "--tail=1", "--timestamps", "--limit-bytes=100",
                  "--since=1h")
        _, query, _, _ = self.kubelet.last()
        self.assertEqual(query, {"tailLines": "1", "timestamps": "true", "limitBytes": "100",
                                 "sinceSeconds": "3600"})
        self.logs("web", "-c", "main", "--previous")
        self.assertEqual(self.kubelet.last()[1], {"previous": "true"})

    def test_logs_default_container(self):
        # kubectl picks the first container itself (and says so on stderr).
        rc, out, err = self.kubectl("logs", "-n", self.ns, "web")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "hello from main\nsecond line\n")

    def test_logs_errors(self):
        out = self.fails("logs", "-n", self.ns, "nope")
        self.assertIn('pods "nope" not found', out)
        out = self.fails("logs", "-n", self.ns, "web", "-c", "broken")
        self.assertIn('Error from server (BadRequest): container "broken" in pod "web" is '
                      'waiting to start: ContainerCreating', out)
        before = self.kubelet.count()
        out = self.fails("logs", "-n", self.ns, "web", "-c", "zzz")
        self.assertIn("container zzz is not valid for pod web", out)
        self.assertEqual(self.kubelet.count(), before)

    def test_logs_of_an_unscheduled_pod_are_empty(self):
        self.assertEqual(self.logs("pending"), "")

    def test_logs_follow(self):
        self.kubelet.follow_ended.clear()
        p = self.server.kubectl_popen("logs", "-f", "-n", self.ns, "web", "-c", "main")
        try:
            lines = []
            deadline = time.time() + 20
            while len(lines) < 3 and time.time() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line)
            self.assertEqual(lines, ["line 1\n", "line 2\n", "line 3\n"])
            self.assertIsNone(p.poll())  # still following
        finally:
            p.kill()
            p.wait(10)
            p.stdout.close()
            p.stderr.close()
        self.assertEqual(self.kubelet.last()[1], {"follow": "true"})
        # kubectl went away: the API server drops its connection to the kubelet.
        self.assertTrue(self.kubelet.follow_ended.wait(15), "the kubelet stream did not end")


if __name__ == "__main__":
    unittest.main()
