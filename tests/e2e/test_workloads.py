"""Workloads end to end: `skiff server` (API server, scheduler, controllers) with
`skiff hollow-node` as the nodes, driven by the real kubectl: deployments and their rollouts,
jobs, cron jobs, namespace deletion, cascading deletes, node failure and quota.
"""

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

PREFIX = "e2e-wl-"


@unittest.skipUnless(harness.KUBECTL_MODE == "modern", "needs kubectl 1.27-1.33")
class Workloads(ServerTestCase):
    API_ONLY = False
    # Short node health periods so a stopped node is noticed within seconds, and pods leave it
    # 2 s later (the tolerations every new pod gets).
    SERVER_ARGS = ("--node-monitor-grace-period", "6s", "--node-monitor-period", "1s",
                   "--default-not-ready-toleration-seconds", "2",
                   "--default-unreachable-toleration-seconds", "2")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hollow, cls._log, cls.log_path = start_hollow(cls.server, "hollow-wl.log", 3, PREFIX)
        cls.spare = None
        ok = wait_for(lambda: len(cls.ready_nodes_of(cls.server)) >= 3, timeout=60)
        if not ok:
            raise RuntimeError("hollow nodes not ready")

    @classmethod
    def tearDownClass(cls):
        stop_hollow(cls.hollow, cls._log)
        if cls.spare:
            stop_hollow(*cls.spare[:2])
        super().tearDownClass()

    @staticmethod
    def ready_nodes_of(server):
        rc, out, _ = server.kubectl("get", "nodes", "-o", "json")
        if rc != 0:
            return []
        nodes = []
        for n in json.loads(out)["items"]:
            for c in n.get("status", {}).get("conditions", []):
                if c["type"] == "Ready" and c["status"] == "True":
                    nodes.append(n["metadata"]["name"])
        return nodes

    def ns(self, prefix="wl"):
        name = self.uniq(prefix)
        self.ok("create", "namespace", name)
        return name

    def pods(self, ns, selector=None):
        args = ["pods", "-n", ns]
        if selector:
            args += ["-l", selector]
        return self.get_json(*args)["items"]

    def wait(self, fn, timeout=60, msg=""):
        value = wait_for(fn, timeout=timeout)
        self.assertTrue(value, msg or "condition not reached; server log:\n" +
                        self.server.log_tail())
        return value

    # ---- deployments ------------------------------------------------------------------------

    def test_deployment_rollout_history_undo_pause(self):
        ns = self.ns("deploy")
        self.ok("create", "deployment", "web", "--image=busybox:1.36", "--replicas=3", "-n", ns)
        out = self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s",
                      timeout=90)
        self.assertIn("successfully rolled out", out)
        pods = self.pods(ns, "app=web")
        self.assertEqual(len(pods), 3)
        for p in pods:
            self.assertTrue(p["spec"].get("nodeName", "").startswith(PREFIX), p["spec"])
            self.assertEqual(p["status"]["phase"], "Running")

        self.ok("scale", "deployment/web", "--replicas=5", "-n", ns)
        self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
        self.assertEqual(len(self.pods(ns, "app=web")), 5)

        self.ok("set", "image", "deployment/web", "busybox=busybox:1.37", "-n", ns)
        self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
        images = {p["spec"]["containers"][0]["image"] for p in self.pods(ns, "app=web")
                  if "deletionTimestamp" not in p["metadata"]}
        self.assertEqual(images, {"busybox:1.37"})
        history = self.ok("rollout", "history", "deployment/web", "-n", ns)
        self.assertIn("1 ", history)
        self.assertIn("2 ", history)
        self.assertEqual(len(self.get_json("rs", "-n", ns)["items"]), 2)

        self.ok("rollout", "undo", "deployment/web", "-n", ns)
        self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
        dep = self.get_json("deployment/web", "-n", ns)
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"],
                         "busybox:1.36")
        self.assertEqual(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3")

        self.ok("rollout", "pause", "deployment/web", "-n", ns)
        self.ok("set", "image", "deployment/web", "busybox=busybox:1.35", "-n", ns)
        time.sleep(2)
        self.assertEqual(len(self.get_json("rs", "-n", ns)["items"]), 2,
                         "a paused deployment must not roll out")
        self.ok("rollout", "resume", "deployment/web", "-n", ns)
        self.ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", timeout=90)
        self.assertEqual(len(self.get_json("rs", "-n", ns)["items"]), 3)
        described = self.ok("describe", "deployment/web", "-n", ns)
        self.assertIn("ScalingReplicaSet", described)
        pod_events = self.ok("get", "events", "-n", ns,
                             "--field-selector", "reason=Scheduled", "-o", "json")
        self.assertTrue(json.loads(pod_events)["items"], "no Scheduled events")

    # ---- jobs ------------------------------------------------------------------------------

    def test_job_completes(self):
        ns = self.ns("job")
        self.ok("create", "job", "ok", "--image=busybox:1.36", "-n", ns, "--", "sh", "-c",
                "exit 0")
        self.ok("wait", "--for=condition=complete", "job/ok", "-n", ns, "--timeout=60s",
                timeout=90)
        job = self.get_json("job/ok", "-n", ns)
        self.assertEqual(job["status"]["succeeded"], 1)

    def test_job_fails_after_backoff_limit(self):
        ns = self.ns("jobfail")
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
               "spec": {"backoffLimit": 0, "template": {"spec": {
                   "restartPolicy": "Never",
                   "containers": [{"name": "c", "image": "busybox:1.36",
                                   "command": ["sh", "-c", "exit 3"]}]}}}}
        self.create_json(job, ns)
        self.ok("wait", "--for=condition=failed", "job/bad", "-n", ns, "--timeout=60s",
                timeout=90)
        job = self.get_json("job/bad", "-n", ns)
        reasons = {c["type"]: c.get("reason") for c in job["status"]["conditions"]}
        self.assertEqual(reasons.get("Failed"), "BackoffLimitExceeded")

    def test_cronjob_fires(self):
        ns = self.ns("cron")
        self.ok("create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=* * * * *",
                "-n", ns, "--", "sh", "-c", "exit 0")
        # Fire it now rather than waiting up to a minute: kubectl's create job --from.
        self.ok("create", "job", "manual", "--from=cronjob/tick", "-n", ns)
        self.ok("wait", "--for=condition=complete", "job/manual", "-n", ns, "--timeout=60s",
                timeout=90)
        # And the schedule itself fires within the next minute.
        self.wait(lambda: any(j["metadata"]["name"].startswith("tick-")
                              for j in self.get_json("jobs", "-n", ns)["items"]), timeout=75)
        cj = self.wait(lambda: self.get_json("cronjob/tick", "-n", ns)["status"]
                       .get("lastScheduleTime"), timeout=30)
        self.assertTrue(cj)

    # ---- deletion ----------------------------------------------------------------------------

    def test_namespace_deletion_removes_its_content(self):
        ns = self.ns("nsdel")
        self.ok("create", "deployment", "d", "--image=busybox:1.36", "--replicas=2", "-n", ns)
        self.ok("create", "configmap", "c", "--from-literal=a=b", "-n", ns)
        self.wait(lambda: len(self.pods(ns)) == 2)
        self.ok("delete", "namespace", ns, "--wait=false")
        self.wait(lambda: self.kubectl("get", "namespace", ns)[0] == 1, timeout=90,
                  msg="namespace %s still exists" % ns)
        rc, out, _ = self.kubectl("get", "pods,rs,deploy,cm", "-n", ns, "-o", "name")
        self.assertEqual(out.strip(), "")

    def test_cascading_deletes(self):
        ns = self.ns("cascade")
        self.ok("create", "deployment", "bg", "--image=busybox:1.36", "--replicas=2", "-n", ns)
        self.ok("create", "deployment", "orphan", "--image=busybox:1.36", "--replicas=2",
                "-n", ns)
        self.wait(lambda: len(self.pods(ns)) == 4)
        self.ok("delete", "deployment", "bg", "-n", ns, "--cascade=foreground")
        self.wait(lambda: not self.pods(ns, "app=bg"), msg="background pods left behind")
        self.assertFalse([r for r in self.get_json("rs", "-n", ns)["items"]
                          if r["metadata"]["name"].startswith("bg-")])
        self.ok("delete", "deployment", "orphan", "-n", ns, "--cascade=orphan")
        time.sleep(2)
        rs = [r for r in self.get_json("rs", "-n", ns)["items"]
              if r["metadata"]["name"].startswith("orphan-")]
        self.assertEqual(len(rs), 1, "orphaned ReplicaSet must stay")
        self.assertFalse(rs[0]["metadata"].get("ownerReferences"))
        self.assertEqual(len(self.pods(ns, "app=orphan")), 2)

    # ---- quota -------------------------------------------------------------------------------

    def test_quota_rejects_over_limit(self):
        ns = self.ns("quota")
        self.ok("create", "quota", "q", "--hard=pods=1,count/configmaps=2", "-n", ns)
        self.wait(lambda: self.get_json("quota/q", "-n", ns).get("status", {}).get("used"))
        self.ok("run", "one", "--image=busybox:1.36", "-n", ns)
        out = self.fails("run", "two", "--image=busybox:1.36", "-n", ns)
        self.assertIn("exceeded quota", out)
        self.assertIn("Forbidden", out)

    # ---- node failure ------------------------------------------------------------------------

    def test_pods_leave_a_stopped_node(self):
        # A node of its own, so stopping it leaves the shared ones alone.
        spare_prefix = PREFIX + "spare-"
        proc, log, _ = start_hollow(self.server, "hollow-spare.log", 1, spare_prefix)
        type(self).spare = (proc, log)
        node = spare_prefix + "0"
        self.wait(lambda: node in self.ready_nodes_of(self.server), timeout=60)
        ns = self.ns("nodefail")
        # Allowed on the spare node and one other, preferring the spare.
        other = PREFIX + "0"
        affinity = {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                       "values": [node, other]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {
                "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                      "values": [node]}]}}]}}
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mv"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "mv"}},
                        "template": {"metadata": {"labels": {"app": "mv"}}, "spec": {
                            "affinity": affinity,
                            "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}
        self.create_json(dep, ns)
        self.ok("rollout", "status", "deployment/mv", "-n", ns, "--timeout=60s", timeout=90)
        on_spare = [p for p in self.pods(ns, "app=mv") if p["spec"].get("nodeName") == node]
        self.assertTrue(on_spare, "the preferred node got no pod")
        tolerations = {(t["key"], t.get("tolerationSeconds"))
                       for t in on_spare[0]["spec"]["tolerations"]}
        self.assertEqual(tolerations, {("node.kubernetes.io/not-ready", 2),
                                       ("node.kubernetes.io/unreachable", 2)})
        stop_hollow(proc, log)
        type(self).spare = None

        def node_unhealthy():
            n = self.get_json("node", node)
            ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
            taints = {t["key"] for t in n["spec"].get("taints", [])}
            return ready["status"] == "Unknown" and "node.kubernetes.io/unreachable" in taints
        self.wait(node_unhealthy, timeout=60, msg="node not marked unreachable")

        def moved():
            pods = [p for p in self.pods(ns, "app=mv") if "deletionTimestamp" not in
                    p["metadata"]]
            running = [p for p in pods if p["status"].get("phase") == "Running"
                       and p["spec"].get("nodeName") != node]
            return len(running) == 2
        self.wait(moved, timeout=90, msg="pods not recreated on healthy nodes")

    def test_preemption_makes_room_for_a_higher_priority_pod(self):
        # A node of its own (tainted, so only this test's pods go there) with 2 CPUs.
        prefix = PREFIX + "prio-"
        proc, log, _ = start_hollow(self.server, "hollow-prio.log", 1, prefix, ("--cpu", "2"))
        node = prefix + "0"
        try:
            self.wait(lambda: node in self.ready_nodes_of(self.server), timeout=60)
            self.ok("taint", "node", node, "e2e-preempt=yes:NoSchedule")
            ns = self.ns("preempt")
            low, high = self.uniq("low"), self.uniq("high")
            self.ok("create", "priorityclass", low, "--value=100")
            self.ok("create", "priorityclass", high, "--value=1000")

            def pod(name, cls, cpu):
                return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                        "spec": {"priorityClassName": cls,
                                 "nodeSelector": {"kubernetes.io/hostname": node},
                                 "tolerations": [{"key": "e2e-preempt", "operator": "Exists"}],
                                 "containers": [{"name": "c", "image": "busybox:1.36",
                                                 "resources": {"requests": {"cpu": cpu}}}]}}
            for name in ("low-a", "low-b"):
                self.create_json(pod(name, low, "800m"), ns)
            self.wait(lambda: all(p["status"].get("phase") == "Running"
                                  for p in self.pods(ns)) and len(self.pods(ns)) == 2,
                      msg="low-priority pods not running")
            self.create_json(pod("vip", high, "1"), ns)

            def vip_running():
                p = self.get_json("pod", "vip", "-n", ns)
                return p if (p["spec"].get("nodeName") == node and
                             p["status"].get("phase") == "Running") else None
            vip = self.wait(vip_running, timeout=90, msg="the high-priority pod did not run")
            self.assertEqual(vip["spec"]["priority"], 1000)
            left = [p["metadata"]["name"] for p in self.pods(ns)
                    if p["metadata"]["name"] != "vip"]
            self.assertEqual(len(left), 1, left)  # one victim was enough

            def preempted_event():
                events = self.get_json("events", "-n", ns,
                                       "--field-selector", "reason=Preempted")["items"]
                return events
            events = self.wait(preempted_event, msg="no Preempted event")
            self.assertEqual(events[0]["message"], "Preempted by pod %s on node %s" % (
                vip["metadata"]["uid"], node))
            victim = events[0]["involvedObject"]["name"]
            self.assertNotIn(victim, left + ["vip"])

            # The node stopped the victim's container and said so, as a kubelet does.
            def killing_event():
                return [e for e in self.get_json("events", "-n", ns, "--field-selector",
                                                 "reason=Killing")["items"]
                        if e["involvedObject"]["name"] == victim]
            killing = self.wait(killing_event, msg="no Killing event for the victim")
            self.assertEqual(killing[0]["source"], {"component": "kubelet", "host": node})
        finally:
            stop_hollow(proc, log)
            self.kubectl("delete", "node", node)


if __name__ == "__main__":
    unittest.main()
