"""`skiff apiserver` alone: on a real etcd (started here on free loopback ports, in the test's
temp dir) with objects under upstream's key layout, and on the embedded store with a short
--event-ttl, where Events expire."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from test_hollow import wait_for

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


@unittest.skipUnless(os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK),
                     "etcd-server / etcd-client not installed")
@unittest.skipIf(harness.KUBECTL is None, "no kubectl found")
class ApiServerOnEtcd(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="skiff-e2e-etcd-")
        client_port, peer_port = harness.free_port(), harness.free_port()
        cls.endpoint = "http://127.0.0.1:%d" % client_port
        peer = "http://127.0.0.1:%d" % peer_port
        cls.etcd_log = open(os.path.join(cls.dir, "etcd.log"), "ab")
        cls.etcd = subprocess.Popen(
            [ETCD, "--name", "e2e", "--data-dir", os.path.join(cls.dir, "etcd"),
             "--listen-client-urls", cls.endpoint, "--advertise-client-urls", cls.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "e2e=" + peer],
            stdout=cls.etcd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=harness._die_with_parent)
        cls.server = None
        try:
            healthy = wait_for(lambda: cls.etcdctl("endpoint", "health").returncode == 0, 30)
            if not healthy:
                raise RuntimeError("etcd did not become healthy")
            cls.server = harness.Server(("--store", "etcd", "--etcd-servers", cls.endpoint),
                                        subcommand="apiserver")
            cls.server.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()
        harness.stop_process(cls.etcd)
        cls.etcd_log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def etcdctl(cls, *args):
        return subprocess.run([ETCDCTL, "--endpoints", cls.endpoint] + list(args),
                              capture_output=True, text=True, timeout=20,
                              env=dict(os.environ, ETCDCTL_API="3"))

    def kubectl(self, *args, **kw):
        rc, out, err = self.server.kubectl(*args, **kw)
        self.assertEqual(rc, 0, "kubectl %s: %s %s" % (" ".join(args), out, err))
        return out

    def test_objects_live_in_etcd_under_upstreams_keys(self):
        self.kubectl("create", "namespace", "shop")
        self.kubectl("create", "configmap", "settings", "-n", "shop", "--from-literal=color=blue")
        got = self.etcdctl("get", "/registry/configmaps/shop/settings", "--print-value-only")
        self.assertEqual(got.returncode, 0, got.stderr)
        stored = json.loads(got.stdout)
        self.assertEqual(stored["data"], {"color": "blue"})
        self.assertEqual(stored["metadata"]["namespace"], "shop")
        # Cluster-scoped objects have no namespace segment; the bootstrap objects are there.
        keys = self.etcdctl("get", "/registry/", "--prefix", "--keys-only").stdout.split()
        for key in ("/registry/namespaces/shop", "/registry/namespaces/kube-system",
                    "/registry/services/default/kubernetes",
                    "/registry/endpoints/default/kubernetes",
                    "/registry/priorityclasses/system-node-critical"):
            self.assertIn(key, keys)
        # A write made in etcd behind the API server's back reaches its readers (the watch).
        stored["data"]["color"] = "green"
        put = self.etcdctl("put", "/registry/configmaps/shop/settings", json.dumps(stored))
        self.assertEqual(put.returncode, 0, put.stderr)
        self.assertTrue(wait_for(lambda: json.loads(self.kubectl(
            "get", "cm", "settings", "-n", "shop", "-o", "json"))["data"]["color"] == "green"))

    def test_kubernetes_service_and_its_endpoints(self):
        svc = json.loads(self.kubectl("get", "svc", "kubernetes", "-o", "json"))
        self.assertEqual(svc["spec"]["clusterIP"], "10.43.0.1")
        self.assertEqual(svc["spec"]["ports"][0]["port"], 443)
        ep = json.loads(self.kubectl("get", "endpoints", "kubernetes", "-o", "json"))
        self.assertEqual(ep["subsets"][0]["ports"][0]["port"], self.server.port)
        self.assertEqual(len(ep["subsets"][0]["addresses"]), 1)


@unittest.skipIf(harness.KUBECTL is None, "no kubectl found")
class EventTtl(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server(("--event-ttl", "2"), subcommand="apiserver")
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_events_expire_after_the_ttl(self):
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": "short-lived", "namespace": "default"},
                 "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                 "reason": "Testing", "message": "gone soon", "type": "Normal"}
        status, _, body = self.server.request("POST", "/api/v1/namespaces/default/events",
                                              body=event)
        self.assertEqual(status, 201, body)
        path = "/api/v1/namespaces/default/events/short-lived"
        self.assertEqual(self.server.request("GET", path)[0], 200)
        # The store's lease ends 2 s after the write; allow for its expiry sweep.
        self.assertTrue(wait_for(lambda: self.server.request("GET", path)[0] == 404, timeout=30),
                        "the event outlived its TTL")


if __name__ == "__main__":
    unittest.main()
