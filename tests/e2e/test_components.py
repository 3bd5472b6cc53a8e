"""The scheduler and the controller manager as processes of their own (`skiff scheduler`,
`skiff controller-manager`) against a server that runs neither, with hollow nodes: a Deployment
rolls out through them, and when the leading scheduler is killed its standby takes the Lease over
and schedules the pods that come next."""

import json
import os
import signal
import subprocess
import time
import unittest

import harness
from harness import ServerTestCase
from test_hollow import start_hollow, stop_hollow, wait_for

tearDownModule = harness.stop_shared

PREFIX = "e2e-comp-"
# Short leader-election periods, so a standby takes over within seconds.
ELECTION = ("--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s",
            "--leader-elect-retry-period", "500ms")


@harness.requires_modern_kubectl
class StandaloneComponents(ServerTestCase):
    API_ONLY = True  # the server runs no scheduler and no controller manager

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.procs = []
        cls.hollow, cls._log, _ = start_hollow(cls.server, "hollow-comp.log", 2, PREFIX)
        cls.schedulers = [cls.start("scheduler", "scheduler-%d.log" % i) for i in range(2)]
        cls.start("controller-manager", "controller-manager.log")

    @classmethod
    def start(cls, component, log_name):
        log = open(os.path.join(cls.server.dir, log_name), "ab")
        proc = subprocess.Popen(
            [harness.SKIFF_BIN, component, "--kubeconfig", cls.server.kubeconfig] + list(ELECTION),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=harness._die_with_parent)
        cls.procs.append((proc, log))
        return proc

    @classmethod
    def tearDownClass(cls):
        for proc, log in cls.procs:
            harness.stop_process(proc)
            log.close()
        stop_hollow(cls.hollow, cls._log)
        super().tearDownClass()

    def lease_holder(self, name):
        rc, out, _ = self.kubectl("get", "lease", name, "-n", "kube-system", "-o", "json")
        return json.loads(out)["spec"].get("holderIdentity", "") if rc == 0 else ""

    def rollout(self, ns):
        out = self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s",
                      timeout=90)
        self.assertIn("successfully rolled out", out)

    def test_rollout_and_scheduler_failover(self):
        ns = self.make_namespace("comp")
        self.ok("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2", "-n", ns)
        self.rollout(ns)
        pods = self.get_json("pods", "-n", ns)["items"]
        self.assertTrue(all(p["spec"].get("nodeName", "").startswith(PREFIX) for p in pods))

        # The leader's identity is host_pid_...: kill that process, the standby takes over.
        holder = wait_for(lambda: self.lease_holder("kube-scheduler"))
        self.assertTrue(holder)
        leader = [p for p in self.schedulers if "_%d_" % p.pid in holder]
        self.assertEqual(len(leader), 1, holder)
        os.kill(leader[0].pid, signal.SIGKILL)
        leader[0].wait(10)
        self.assertTrue(wait_for(lambda: self.lease_holder("kube-scheduler") not in ("", holder),
                                 timeout=30), "no standby took the lease over")
        self.ok("scale", "deployment", "web", "--replicas=4", "-n", ns)
        self.rollout(ns)
        pods = self.get_json("pods", "-n", ns)["items"]
        self.assertEqual(len(pods), 4)
        self.assertTrue(all(p["spec"].get("nodeName", "").startswith(PREFIX) for p in pods))


if __name__ == "__main__":
    unittest.main()
