"""`skiff hollow-node` against a real skiff server: simulated nodes register, stay Ready, and play
the kubelet's part for pods bound to them.

The server runs its scheduler and controllers, but the pods here name a scheduler of their own,
so the tests bind them through pods/binding themselves and choose their nodes.
"""

import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import unittest

import harness
from harness import ServerTestCase

tearDownModule = harness.stop_shared

PREFIX = "e2e-hollow-"
COUNT = 3


def wait_for(fn, timeout=30, interval=0.2):
    """Calls fn until it returns something truthy; returns that, or the last value on timeout."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return value


def start_hollow(server, log_name, count, prefix, extra=()):
    """Starts `skiff hollow-node` against `server`; returns (process, log file, log path)."""
    log_path = os.path.join(server.dir, log_name)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [harness.SKIFF_BIN, "hollow-node", "--kubeconfig", server.kubeconfig,
         "--count", str(count), "--name-prefix", prefix,
         "--node-lease-renew-interval", "2s", "--node-status-report-frequency", "5s"] +
        list(extra),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=harness._die_with_parent)
    return proc, log, log_path


def stop_hollow(proc, log):
    """SIGTERM, then SIGKILL after 15 s; returns the exit code."""
    rc = None
    if proc is not None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        rc = proc.returncode
    if log is not None:
        log.close()
    return rc


@unittest.skipIf(harness.KUBECTL is None, "no kubectl found")
class HollowNode(ServerTestCase):
    API_ONLY = False

    hollow = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hollow, cls._log, cls.log_path = start_hollow(cls.server, "hollow-node.log", COUNT,
                                                           PREFIX)

    @classmethod
    def tearDownClass(cls):
        stop_hollow(cls.hollow, cls._log)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.hollow.poll() is not None:
            self.fail("skiff hollow-node exited with rc %s; log:\n%s" %
                      (self.hollow.returncode, self.hollow_log()))

    def hollow_log(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    # ---- helpers -----------------------------------------------------------------------------

    def hollow_nodes(self):
        items = self.get_json("nodes")["items"]
        return {n["metadata"]["name"]: n for n in items if n["metadata"]["name"].startswith(PREFIX)}

    def ready_nodes(self):
        def ready(n):
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions", []))
        nodes = self.hollow_nodes()
        return nodes if len(nodes) == COUNT and all(map(ready, nodes.values())) else None

    def wait_nodes_ready(self):
        nodes = wait_for(self.ready_nodes, timeout=60)
        self.assertTrue(nodes, "hollow nodes not Ready; log:\n" + self.hollow_log())
        return nodes

    def api(self, method, path, body=None):
        status, _, data = self.server.request(method, path, body=body)
        return status, (json.loads(data) if data else None)

    def create_bound_pod(self, ns, name, node, command=None, restart_policy="Always"):
        container = {"name": "main", "image": "busybox:1.36"}
        if command:
            container["command"] = command
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
               "spec": {"containers": [container], "restartPolicy": restart_policy,
                        "schedulerName": "e2e-manual"}}
        status, body = self.api("POST", "/api/v1/namespaces/%s/pods" % ns, pod)
        self.assertEqual(status, 201, body)
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        status, body = self.api("POST", "/api/v1/namespaces/%s/pods/%s/binding" % (ns, name),
                                binding)
        self.assertEqual(status, 201, body)

    def pod(self, ns, name):
        status, body = self.api("GET", "/api/v1/namespaces/%s/pods/%s" % (ns, name))
        return body if status == 200 else None

    def wait_phase(self, ns, name, phase, timeout=30):
        pod = wait_for(lambda: (lambda p: p if p and p.get("status", {}).get("phase") == phase
                                else None)(self.pod(ns, name)), timeout=timeout)
        self.assertTrue(pod, "pod %s/%s never reached %s: %s\nhollow log:\n%s" %
                        (ns, name, phase, json.dumps(self.pod(ns, name), indent=1),
                         self.hollow_log()))
        return pod

    # ---- tests -------------------------------------------------------------------------------

    def test_nodes_register_ready_with_capacity(self):
        nodes = self.wait_nodes_ready()
        self.assertEqual(sorted(nodes), [PREFIX + str(i) for i in range(COUNT)])
        cidrs = set()
        for name, node in nodes.items():
            cap = node["status"]["capacity"]
            self.assertEqual((cap["cpu"], cap["memory"], cap["pods"]), ("4", "16Gi", "110"))
            self.assertEqual(node["status"]["allocatable"]["pods"], "110")
            self.assertEqual(node["metadata"]["labels"]["kubernetes.io/hostname"], name)
            cidrs.add(node["spec"]["podCIDR"])
        self.assertEqual(len(cidrs), COUNT)
        out = self.ok("get", "nodes", "-o", "wide")
        rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:]]
        ours = [r for r in rows if r[0].startswith(PREFIX)]
        self.assertEqual(len(ours), COUNT, out)
        for r in ours:
            self.assertEqual(r[1], "Ready", out)
            self.assertRegex(r[4], r"^v1\.32\.", out)
        self.assertIn("hollow://1.0", out)

    def test_leases_are_renewed(self):
        self.wait_nodes_ready()
        first = self.get_json("lease", PREFIX + "0", "-n", "kube-node-lease")
        self.assertEqual(first["spec"]["holderIdentity"], PREFIX + "0")
        self.assertEqual(first["spec"]["leaseDurationSeconds"], 40)
        later = wait_for(lambda: (lambda l: l if l["spec"]["renewTime"] !=
                                  first["spec"]["renewTime"] else None)(
            self.get_json("lease", PREFIX + "0", "-n", "kube-node-lease")), timeout=15)
        self.assertTrue(later, "lease not renewed")

    def test_bound_pod_runs_with_an_address_of_its_node(self):
        nodes = self.wait_nodes_ready()
        ns = self.make_namespace("hollow")
        node = PREFIX + "1"
        self.create_bound_pod(ns, "web", node, ["sleep", "3600"])
        pod = self.wait_phase(ns, "web", "Running")
        cidr = ipaddress.ip_network(nodes[node]["spec"]["podCIDR"])
        self.assertIn(ipaddress.ip_address(pod["status"]["podIP"]), cidr)
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
            self.assertEqual(conditions.get(t), "True", conditions)
        out = self.ok("get", "pod", "web", "-n", ns)
        self.assertRegex(out.splitlines()[1], r"^web\s+1/1\s+Running\s+0\s")

    def test_exit_code_with_restart_never_fails(self):
        self.wait_nodes_ready()
        ns = self.make_namespace("hollow")
        self.create_bound_pod(ns, "job", PREFIX + "2", ["sh", "-c", "exit 3"], "Never")
        pod = self.wait_phase(ns, "job", "Failed")
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (3, "Error"))

    def test_graceful_delete_is_finished_by_the_node(self):
        self.wait_nodes_ready()
        ns = self.make_namespace("hollow")
        self.create_bound_pod(ns, "gone", PREFIX + "0")
        self.wait_phase(ns, "gone", "Running")
        start = time.time()
        # Default grace (30 s): only the node's final delete makes the pod go before that.
        self.ok("delete", "pod", "gone", "-n", ns, "--wait=true", "--timeout=25s", timeout=40)
        self.assertLess(time.time() - start, 20)
        self.assertIsNone(self.pod(ns, "gone"))

    def test_a_restarted_process_keeps_its_nodes_and_pods(self):
        prefix, extra = "e2e-restart-", ("--first-index", "100")
        node = prefix + "100"
        ns = self.make_namespace("hollow")

        def node_ready():
            status, body = self.api("GET", "/api/v1/nodes/" + node)
            return status == 200 and any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in body["status"].get("conditions", []))

        proc, log, path = start_hollow(self.server, "hollow-restart.log", 1, prefix, extra)
        try:
            self.assertTrue(wait_for(node_ready), "node %s not Ready" % node)
            self.create_bound_pod(ns, "kept", node)
            first = self.wait_phase(ns, "kept", "Running")
        finally:
            self.assertEqual(stop_hollow(proc, log), 0)
        # A stopped hollow node leaves its Node behind, as a stopped kubelet does.
        self.ok("get", "node", node)

        proc, log, path = start_hollow(self.server, "hollow-restart.log", 1, prefix,
                                       extra + ("--delete-nodes-on-exit",))
        try:
            self.assertTrue(wait_for(node_ready), "node %s not Ready" % node)
            self.create_bound_pod(ns, "new", node)
            second = self.wait_phase(ns, "new", "Running")
            kept = self.pod(ns, "kept")
            self.assertEqual(kept["status"]["phase"], "Running")
            self.assertEqual(kept["status"]["podIP"], first["status"]["podIP"])
            self.assertNotEqual(second["status"]["podIP"], first["status"]["podIP"])
            self.assertEqual(kept["status"]["containerStatuses"][0]["state"],
                             first["status"]["containerStatuses"][0]["state"])
        finally:
            self.assertEqual(stop_hollow(proc, log), 0)
        out = self.fails("get", "node", node)
        self.assertIn("NotFound", out)

    def test_a_job_completes_on_hollow_nodes(self):
        """The server's Job controller, pods that end after the hollow-exit-after annotation."""
        self.wait_nodes_ready()
        ns = self.make_namespace("hollow-job")
        template = {"metadata": {"annotations": {"skiff.dev/hollow-exit-after": "500ms"}},
                    "spec": {"restartPolicy": "Never", "schedulerName": "e2e-manual",
                             "containers": [{"name": "work", "image": "busybox:1.36",
                                             "command": ["perl", "-e", "1"]}]}}
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work"},
               "spec": {"completions": 3, "parallelism": 2, "template": template}}
        status, body = self.api("POST", "/apis/batch/v1/namespaces/%s/jobs" % ns, job)
        self.assertEqual(status, 201, body)
        bound = set()

        def complete():
            # Their scheduler is "e2e-manual": bind the Job's pods as they appear.
            _, pods = self.api("GET", "/api/v1/namespaces/%s/pods" % ns)
            for p in pods["items"]:
                name = p["metadata"]["name"]
                if not p["spec"].get("nodeName") and name not in bound:
                    binding = {"apiVersion": "v1", "kind": "Binding",
                               "metadata": {"name": name},
                               "target": {"apiVersion": "v1", "kind": "Node",
                                          "name": PREFIX + str(len(bound) % COUNT)}}
                    self.api("POST", "/api/v1/namespaces/%s/pods/%s/binding" % (ns, name),
                             binding)
                    bound.add(name)
            _, j = self.api("GET", "/apis/batch/v1/namespaces/%s/jobs/work" % ns)
            return any(c["type"] == "Complete" and c["status"] == "True"
                       for c in j.get("status", {}).get("conditions", []))

        self.assertTrue(wait_for(complete, timeout=60), "job did not complete")
        _, j = self.api("GET", "/apis/batch/v1/namespaces/%s/jobs/work" % ns)
        self.assertEqual(j["status"]["succeeded"], 3)


if __name__ == "__main__":
    unittest.main()
