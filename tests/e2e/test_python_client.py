"""The official Python client (Debian python3-kubernetes 22.6.0) against a real skiff server.

Run with /usr/bin/python3: Debian's package imports only there.
"""

import datetime
import json
import threading
import time
import unittest
import warnings

import harness
from harness import ServerTestCase

try:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:  # pragma: no cover
    client = None
    IMPORT_ERROR = e

tearDownModule = harness.stop_shared


def status_of(exc):
    try:
        return json.loads(exc.body)
    except (TypeError, ValueError):
        return {}


@unittest.skipIf(client is None, "python3-kubernetes not importable (use /usr/bin/python3; "
                 "apt-get install python3-kubernetes)")
class PythonClient(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api_client = config.new_client_from_config(config_file=cls.server.kubeconfig)
        cls.core = client.CoreV1Api(cls.api_client)
        cls.apps = client.AppsV1Api(cls.api_client)

    @classmethod
    def tearDownClass(cls):
        cls.api_client.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        # the client library leaves pooled sockets to the garbage collector
        warnings.simplefilter("ignore", ResourceWarning)

    def new_ns(self, prefix="py"):
        name = self.uniq(prefix)
        ns = self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.assertEqual(ns.metadata.name, name)
        return name

    def cm(self, name, data=None, labels=None):
        return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels),
                                  data=data or {"k": "v"})

    def pod(self, name, labels=None):
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(containers=[client.V1Container(
                name="main", image="busybox:1.36", command=["sleep", "3600"])]))

    def deployment(self, name, replicas=1, image="nginx:1.25"):
        labels = {"app": name}
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=replicas,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="main",
                                                                         image=image)]))))

    def assertApiError(self, code, reason, fn, *args, **kw):
        with self.assertRaises(ApiException) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.status, code, cm.exception.body)
        st = status_of(cm.exception)
        self.assertEqual(st.get("kind"), "Status")
        self.assertEqual(st.get("reason"), reason)
        self.assertEqual(st.get("code"), code)
        return st

    # ---- namespaces ------------------------------------------------------------------------

    def test_namespaces(self):
        names = [n.metadata.name for n in self.core.list_namespace().items]
        for n in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.assertIn(n, names)
        name = self.new_ns("nsa")
        got = self.core.read_namespace(name)
        self.assertEqual(got.status.phase, "Active")
        self.assertTrue(got.metadata.uid)
        patched = self.core.patch_namespace(name, {"metadata": {"labels": {"team": "blue"}}})
        self.assertEqual(patched.metadata.labels.get("team"), "blue")
        self.assertEqual(self.core.read_namespace(name).metadata.labels.get("team"), "blue")
        self.assertApiError(409, "AlreadyExists", self.core.create_namespace,
                            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.core.delete_namespace(name)
        # deletion is graceful (finalizer) or immediate; either way it ends up gone or Terminating
        try:
            ns = self.core.read_namespace(name)
            self.assertEqual(ns.status.phase, "Terminating")
            self.assertIsNotNone(ns.metadata.deletion_timestamp)
        except ApiException as e:
            self.assertEqual(e.status, 404)

    def test_read_missing(self):
        st = self.assertApiError(404, "NotFound", self.core.read_namespace, "no-such-ns-xyz")
        self.assertEqual(st["message"], 'namespaces "no-such-ns-xyz" not found')
        st = self.assertApiError(404, "NotFound", self.core.read_namespaced_config_map, "nope",
                                 "default")
        self.assertEqual(st["message"], 'configmaps "nope" not found')
        self.assertEqual(st["details"], {"name": "nope", "kind": "configmaps"})
        self.assertApiError(404, "NotFound", self.core.delete_namespaced_pod, "nope", "default")
        self.assertApiError(404, "NotFound", self.apps.read_namespaced_deployment, "nope", "default")

    # ---- configmaps ------------------------------------------------------------------------

    def test_configmaps(self):
        ns = self.new_ns("cm")
        created = self.core.create_namespaced_config_map(ns, self.cm("one", {"a": "1"}))
        self.assertEqual(created.metadata.namespace, ns)
        self.assertTrue(created.metadata.resource_version)
        got = self.core.read_namespaced_config_map("one", ns)
        self.assertEqual(got.data, {"a": "1"})
        self.assertEqual(got.metadata.uid, created.metadata.uid)

        st = self.assertApiError(409, "AlreadyExists", self.core.create_namespaced_config_map, ns,
                                 self.cm("one"))
        self.assertEqual(st["message"], 'configmaps "one" already exists')

        # strategic (the client's default for a dict), then merge
        p = self.core.patch_namespaced_config_map("one", ns, {"data": {"b": "2"}})
        self.assertEqual(p.data, {"a": "1", "b": "2"})
        self.assertNotEqual(p.metadata.resource_version, created.metadata.resource_version)
        p = self.core.patch_namespaced_config_map("one", ns, {"data": {"a": None}})
        self.assertEqual(p.data, {"b": "2"})

        # replace with a stale resourceVersion → 409 Conflict
        stale = got
        stale.data = {"c": "3"}
        self.assertApiError(409, "Conflict", self.core.replace_namespaced_config_map, "one", ns,
                            stale)
        fresh = self.core.read_namespaced_config_map("one", ns)
        fresh.data = {"c": "3"}
        r = self.core.replace_namespaced_config_map("one", ns, fresh)
        self.assertEqual(r.data, {"c": "3"})

        self.core.delete_namespaced_config_map("one", ns)
        self.assertApiError(404, "NotFound", self.core.read_namespaced_config_map, "one", ns)

    def test_label_selector_list(self):
        ns = self.new_ns("sel")
        for name, env in (("a", "prod"), ("b", "dev"), ("c", "prod"), ("d", None)):
            self.core.create_namespaced_config_map(
                ns, self.cm(name, labels={"env": env} if env else None))

        def names(**kw):
            return sorted(i.metadata.name for i in
                          self.core.list_namespaced_config_map(ns, **kw).items)
        self.assertEqual(names(), ["a", "b", "c", "d"])
        self.assertEqual(names(label_selector="env=prod"), ["a", "c"])
        self.assertEqual(names(label_selector="env!=prod"), ["b", "d"])
        self.assertEqual(names(label_selector="env"), ["a", "b", "c"])
        self.assertEqual(names(label_selector="!env"), ["d"])
        self.assertEqual(names(label_selector="env in (dev,qa)"), ["b"])
        self.assertEqual(names(field_selector="metadata.name=c"), ["c"])
        self.assertEqual(names(label_selector="env=none"), [])
        # across namespaces
        everywhere = self.core.list_config_map_for_all_namespaces(label_selector="env=prod")
        mine = sorted(i.metadata.name for i in everywhere.items if i.metadata.namespace == ns)
        self.assertEqual(mine, ["a", "c"])

    def test_pagination(self):
        ns = self.new_ns("page")
        want = ["cm-%02d" % i for i in range(7)]
        for n in want:
            self.core.create_namespaced_config_map(ns, self.cm(n))
        seen, token, pages = [], None, 0
        while True:
            kw = {"limit": 3}
            if token:
                kw["_continue"] = token
            page = self.core.list_namespaced_config_map(ns, **kw)
            pages += 1
            self.assertLessEqual(len(page.items), 3)
            seen += [i.metadata.name for i in page.items]
            token = page.metadata._continue
            if pages < 3:
                self.assertTrue(token, "page %d has no continue token" % pages)
            if not token:
                break
            self.assertLess(pages, 10, "pagination does not end")
        self.assertEqual(pages, 3)
        self.assertEqual(seen, want)  # lists are ordered by name
        # an object created between pages does not break the continuation
        first = self.core.list_namespaced_config_map(ns, limit=4)
        self.core.create_namespaced_config_map(ns, self.cm("zz-late"))
        rest = self.core.list_namespaced_config_map(ns, limit=10, _continue=first.metadata._continue)
        self.assertEqual([i.metadata.name for i in first.items + rest.items], want)
        # a bad token is a 400 (or 410 Expired)
        with self.assertRaises(ApiException) as cm:
            self.core.list_namespaced_config_map(ns, limit=2, _continue="garbage!!")
        self.assertIn(cm.exception.status, (400, 410))

    def test_pagination_remaining_item_count(self):
        ns = self.new_ns("remain")
        for i in range(5):
            self.core.create_namespaced_config_map(ns, self.cm("c%d" % i))
        page = self.core.list_namespaced_config_map(ns, limit=2)
        self.assertEqual([i.metadata.name for i in page.items], ["c0", "c1"])
        self.assertEqual(page.metadata.remaining_item_count, 3)

    # ---- pods --------------------------------------------------------------------------------

    def test_pods(self):
        ns = self.new_ns("pod")
        created = self.core.create_namespaced_pod(ns, self.pod("p1", {"app": "x"}))
        self.assertEqual(created.status.phase, "Pending")
        self.assertEqual(created.spec.containers[0].image_pull_policy, "IfNotPresent")
        self.assertEqual(created.spec.restart_policy, "Always")
        self.assertEqual(created.spec.termination_grace_period_seconds, 30)
        got = self.core.read_namespaced_pod("p1", ns)
        self.assertEqual(got.spec.containers[0].command, ["sleep", "3600"])
        pods = self.core.list_namespaced_pod(ns, label_selector="app=x").items
        self.assertEqual([p.metadata.name for p in pods], ["p1"])
        p = self.core.patch_namespaced_pod("p1", ns, {"metadata": {"labels": {"extra": "1"}}})
        self.assertEqual(p.metadata.labels, {"app": "x", "extra": "1"})
        # changing an immutable pod field → 422
        st = self.assertApiError(422, "Invalid", self.core.patch_namespaced_pod, "p1", ns,
                                 {"spec": {"restartPolicy": "Never"}})
        self.assertIn("spec: Forbidden: pod updates may not change fields other than", st["message"])
        self.assertApiError(409, "AlreadyExists", self.core.create_namespaced_pod, ns,
                            self.pod("p1"))
        self.core.delete_namespaced_pod("p1", ns)
        # unscheduled pods go at once; a bound one would be graceful
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.core.read_namespaced_pod("p1", ns)
                time.sleep(0.2)
            except ApiException as e:
                self.assertEqual(e.status, 404)
                break
        else:
            self.fail("pod p1 still present 10s after delete")

    def test_invalid_pod(self):
        ns = self.new_ns("badpod")
        bad = self.pod("Bad_Pod")
        st = self.assertApiError(422, "Invalid", self.core.create_namespaced_pod, ns, bad)
        self.assertEqual(st["details"]["causes"][0]["field"], "metadata.name")
        nocontainers = client.V1Pod(metadata=client.V1ObjectMeta(name="empty"),
                                    spec=client.V1PodSpec(containers=[]))
        st = self.assertApiError(422, "Invalid", self.core.create_namespaced_pod, ns, nocontainers)
        self.assertIn("spec.containers: Required value", st["message"])

    def test_pod_defaults_and_validation_as_upstream(self):
        ns = self.new_ns("podrules")
        raw = "/api/v1/namespaces/%s/pods" % ns

        def post(name, containers):
            st, _, body = self.server.request("POST", raw, body={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": containers}})
            return st, json.loads(body)

        # imagePullPolicy: Always for :latest and untagged images, else IfNotPresent.
        st, p = post("pulls", [{"name": "a", "image": "busybox"},
                               {"name": "b", "image": "busybox:latest"},
                               {"name": "c", "image": "busybox:1.36"},
                               {"name": "d", "image": "busybox@sha256:" + "0" * 64}])
        self.assertEqual(st, 201, p)
        self.assertEqual([c["imagePullPolicy"] for c in p["spec"]["containers"]],
                         ["Always", "Always", "IfNotPresent", "IfNotPresent"])
        # Duplicate container names and out-of-range ports: one cause per field, nothing stored.
        st, status = post("twins", [{"name": "x", "image": "busybox:1.36"},
                                    {"name": "x", "image": "busybox:1.36",
                                     "ports": [{"containerPort": 70000}]}])
        self.assertEqual((st, status["reason"]), (422, "Invalid"))
        fields = {c["field"]: c["reason"] for c in status["details"]["causes"]}
        self.assertEqual(fields.get("spec.containers[1].name"), "FieldValueDuplicate", status)
        self.assertEqual(fields.get("spec.containers[1].ports[0].containerPort"),
                         "FieldValueInvalid", status)
        self.assertEqual(self.server.request("GET", raw + "/twins")[0], 404)

    def test_scheduling_gates_and_pod_update_rules_as_upstream(self):
        ns = self.new_ns("gates")
        raw = "/api/v1/namespaces/%s/pods" % ns
        merge = {"Content-Type": "application/merge-patch+json"}

        def post(name, **spec):
            spec.setdefault("containers", [{"name": "c", "image": "busybox:1.36"}])
            st, _, body = self.server.request("POST", raw, body={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            return st, json.loads(body)

        def patch(name, spec):
            st, _, body = self.server.request("PATCH", raw + "/" + name,
                                              body=json.dumps({"spec": spec}), headers=merge)
            return st, json.loads(body)

        def scheduled_condition(pod):
            return [c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"]

        # A gated pod says so from the start.
        st, p = post("gated", schedulingGates=[{"name": "example.com/a"}, {"name": "b"}])
        self.assertEqual(st, 201, p)
        cond = scheduled_condition(p)
        self.assertEqual([(c["status"], c["reason"], c["message"]) for c in cond],
                         [("False", "SchedulingGated",
                           "Scheduling is blocked due to non-empty scheduling gates")])
        # Bad gates: one cause per field, nothing stored.
        st, status = post("badgates", schedulingGates=[{"name": "Bad Gate!"}, {"name": "b"},
                                                       {"name": "b"}])
        self.assertEqual((st, status["reason"]), (422, "Invalid"), status)
        causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
        self.assertIn(("spec.schedulingGates[0].name", "FieldValueInvalid"), causes)
        self.assertIn(("spec.schedulingGates[2].name", "FieldValueDuplicate"), causes)
        self.assertEqual(self.server.request("GET", raw + "/badgates")[0], 404)
        st, status = post("placed", schedulingGates=[{"name": "a"}], nodeName="n1")
        self.assertEqual(st, 422, status)
        self.assertIn("spec.nodeName: Forbidden: cannot be set until all schedulingGates have "
                      "been cleared", status["message"])
        # A gated pod cannot be bound.
        st, _, body = self.server.request("POST", raw + "/gated/binding", body={
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "gated"},
            "target": {"kind": "Node", "name": "n1"}})
        self.assertEqual(st, 500, body)
        self.assertIn("pod gated has non-empty .spec.schedulingGates", json.loads(body)["message"])
        # Gates may be removed, never added.
        st, status = patch("gated", {"schedulingGates": [{"name": "example.com/a"},
                                                         {"name": "c"}]})
        self.assertEqual(st, 422, status)
        self.assertIn("spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but "
                      "found new scheduling gate 'c'", status["message"])
        st, p = patch("gated", {"schedulingGates": [{"name": "example.com/a"}]})
        self.assertEqual(st, 200, p)
        self.assertEqual([g["name"] for g in p["spec"]["schedulingGates"]], ["example.com/a"])
        st, p = patch("gated", {"schedulingGates": None})
        self.assertEqual(st, 200, p)
        self.assertNotIn("schedulingGates", p["spec"])

        # Tolerations: existing ones may change only their tolerationSeconds; new ones may come.
        tol = {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
        st, p = post("tolerant", tolerations=[tol])
        self.assertEqual(st, 201, p)
        kept = [t for t in p["spec"]["tolerations"] if t.get("key") != "k"]  # admission's
        st, p = patch("tolerant", {"tolerations": [dict(tol, tolerationSeconds=10)] + kept})
        self.assertEqual(st, 200, p)
        extra = {"key": "x", "operator": "Equal", "value": "y", "effect": "NoSchedule"}
        st, p = patch("tolerant", {"tolerations": p["spec"]["tolerations"] + [extra]})
        self.assertEqual(st, 200, p)
        # An update that leaves out the default tolerations gets them back (admission).
        st, p = patch("tolerant", {"tolerations": [tol, extra]})
        self.assertEqual(st, 200, p)
        self.assertEqual(len(p["spec"]["tolerations"]), 4, p["spec"]["tolerations"])
        st, status = patch("tolerant", {"tolerations": [extra]})
        self.assertEqual(st, 422, status)
        self.assertIn("spec.tolerations: Forbidden: existing toleration can not be modified except "
                      "its tolerationSeconds", status["message"])
        st, status = patch("tolerant", {"tolerations": [dict(tol, effect="NoSchedule")] + kept
                                        + [extra]})
        self.assertEqual(st, 422, status)

    def test_service_defaults(self):
        ns = self.new_ns("svcdef")
        svc = self.core.create_namespaced_service(ns, client.V1Service(
            metadata=client.V1ObjectMeta(name="plain"),
            spec=client.V1ServiceSpec(selector={"app": "x"},
                                      ports=[client.V1ServicePort(port=80)])))
        self.assertEqual((svc.spec.type, svc.spec.session_affinity), ("ClusterIP", "None"))
        self.assertEqual(svc.spec.ports[0].target_port, 80)
        self.assertEqual(svc.spec.ports[0].protocol, "TCP")
        bad = client.V1Service(metadata=client.V1ObjectMeta(name="bad"),
                               spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=0)]))
        st = self.assertApiError(422, "Invalid", self.core.create_namespaced_service, ns, bad)
        self.assertEqual(st["details"]["causes"][0]["field"], "spec.ports[0].port")

    def test_generation_counts_spec_changes_only(self):
        ns = self.new_ns("gen")
        d = self.apps.create_namespaced_deployment(ns, self.deployment("web"))
        self.assertEqual(d.metadata.generation, 1)
        d = self.apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"t": "1"}}})
        self.assertEqual(d.metadata.generation, 1)
        d = self.apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
        self.assertEqual(d.metadata.generation, 2)
        d = self.apps.patch_namespaced_deployment_status(
            "web", ns, {"status": {"observedGeneration": 2}})
        self.assertEqual(d.metadata.generation, 2)

    # ---- deployments -----------------------------------------------------------------------

    def test_deployments(self):
        ns = self.new_ns("dep")
        d = self.apps.create_namespaced_deployment(ns, self.deployment("web", replicas=2))
        self.assertEqual(d.spec.replicas, 2)
        self.assertEqual(d.spec.strategy.type, "RollingUpdate")
        self.assertEqual(d.spec.revision_history_limit, 10)
        self.assertEqual(d.spec.progress_deadline_seconds, 600)
        self.assertEqual(d.metadata.generation, 1)
        got = self.apps.read_namespaced_deployment("web", ns)
        self.assertEqual(got.spec.template.spec.containers[0].image, "nginx:1.25")
        # strategic merge on containers (merge key: name)
        p = self.apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "main", "image": "nginx:1.26"}]}}}})
        self.assertEqual([(c.name, c.image) for c in p.spec.template.spec.containers],
                         [("main", "nginx:1.26")])
        self.assertEqual(p.metadata.generation, 2)
        # scale subresource
        s = self.apps.read_namespaced_deployment_scale("web", ns)
        self.assertEqual(s.spec.replicas, 2)
        s = self.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
        self.assertEqual(s.spec.replicas, 5)
        self.assertEqual(self.apps.read_namespaced_deployment("web", ns).spec.replicas, 5)
        # status is a separate subresource: a main-resource update does not change it
        got = self.apps.read_namespaced_deployment("web", ns)
        got.status = client.V1DeploymentStatus(replicas=42)
        r = self.apps.replace_namespaced_deployment("web", ns, got)
        self.assertTrue(r.status is None or r.status.replicas != 42, r.status)
        names = [x.metadata.name for x in self.apps.list_namespaced_deployment(ns).items]
        self.assertEqual(names, ["web"])
        self.assertApiError(409, "AlreadyExists", self.apps.create_namespaced_deployment, ns,
                            self.deployment("web"))
        self.apps.delete_namespaced_deployment("web", ns)
        self.assertApiError(404, "NotFound", self.apps.read_namespaced_deployment, "web", ns)

    # ---- watch -------------------------------------------------------------------------------

    def test_watch_events(self):
        ns = self.new_ns("watch")
        start_rv = self.core.list_namespaced_config_map(ns).metadata.resource_version
        events = []

        def consume():
            w = watch.Watch()
            for ev in w.stream(self.core.list_namespaced_config_map, ns, timeout_seconds=8,
                               resource_version=start_rv):
                events.append((ev["type"], ev["object"].metadata.name,
                               (ev["object"].data or {}).get("k")))
                if ev["type"] == "DELETED":
                    w.stop()
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(0.5)
        self.core.create_namespaced_config_map(ns, self.cm("w1", {"k": "1"}))
        self.core.patch_namespaced_config_map("w1", ns, {"data": {"k": "2"}})
        self.core.delete_namespaced_config_map("w1", ns)
        t.join(15)
        self.assertFalse(t.is_alive(), "watch did not end")
        self.assertEqual(events, [("ADDED", "w1", "1"), ("MODIFIED", "w1", "2"),
                                  ("DELETED", "w1", "2")])

    def test_watch_replays_from_resource_version(self):
        """Events after the given RV are replayed even if they happened before the watch started."""
        ns = self.new_ns("replay")
        rv = self.core.list_namespaced_config_map(ns).metadata.resource_version
        self.core.create_namespaced_config_map(ns, self.cm("r1"))
        self.core.create_namespaced_config_map(ns, self.cm("r2"))
        w = watch.Watch()
        got = []
        for ev in w.stream(self.core.list_namespaced_config_map, ns, resource_version=rv,
                           timeout_seconds=3):
            got.append((ev["type"], ev["object"].metadata.name))
            if len(got) == 2:
                w.stop()
        self.assertEqual(got, [("ADDED", "r1"), ("ADDED", "r2")])

    def test_watch_timeout_ends_stream(self):
        ns = self.new_ns("wto")
        t0 = time.time()
        evs = list(watch.Watch().stream(self.core.list_namespaced_pod, ns, timeout_seconds=2))
        elapsed = time.time() - t0
        self.assertEqual(evs, [])
        self.assertGreaterEqual(elapsed, 1.5)
        self.assertLess(elapsed, 10)

    def test_pod_admission_defaults(self):
        ns = self.new_ns("adm")
        p = self.core.create_namespaced_pod(ns, self.pod("p"))
        self.assertEqual(p.spec.service_account_name, "default")
        self.assertEqual(p.spec.priority, 0)
        tolerations = {(t.key, t.effect, t.toleration_seconds) for t in p.spec.tolerations}
        self.assertIn(("node.kubernetes.io/not-ready", "NoExecute", 300), tolerations)
        self.assertIn(("node.kubernetes.io/unreachable", "NoExecute", 300), tolerations)
        self.assertEqual(p.status.phase, "Pending")

    def test_binding(self):
        ns = self.new_ns("bind")
        self.core.create_namespaced_pod(ns, self.pod("p"))
        body = client.V1Binding(metadata=client.V1ObjectMeta(name="p"),
                                target=client.V1ObjectReference(kind="Node", name="node-a"))
        # pods/{name}/binding, as the scheduler binds. The answer is a Status, not a Binding.
        self.core.create_namespaced_pod_binding("p", ns, body, _preload_content=False)
        p = self.core.read_namespaced_pod("p", ns)
        self.assertEqual(p.spec.node_name, "node-a")
        scheduled = [c for c in p.status.conditions if c.type == "PodScheduled"]
        self.assertEqual([c.status for c in scheduled], ["True"])
        # A second binding conflicts.
        with self.assertRaises(ApiException) as ctx:
            self.core.create_namespaced_pod_binding("p", ns, body, _preload_content=False)
        self.assertEqual(ctx.exception.status, 409)
        self.assertIn("already assigned to node", status_of(ctx.exception).get("message", ""))
        # Binding a missing pod is 404; a binding without a target is 422.
        with self.assertRaises(ApiException) as ctx:
            self.core.create_namespaced_pod_binding(
                "nope", ns, client.V1Binding(metadata=client.V1ObjectMeta(name="nope"),
                                     target=client.V1ObjectReference(kind="Node", name="n")),
                _preload_content=False)
        self.assertEqual(ctx.exception.status, 404)

    def test_eviction(self):
        ns = self.new_ns("evict")
        self.core.create_namespaced_pod(ns, self.pod("p"))
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name="p", namespace=ns))
        self.core.create_namespaced_pod_eviction("p", ns, body, _preload_content=False)
        with self.assertRaises(ApiException) as ctx:
            self.core.read_namespaced_pod("p", ns)
        self.assertEqual(ctx.exception.status, 404)
        with self.assertRaises(ApiException) as ctx:
            self.core.create_namespaced_pod_eviction("p", ns, body, _preload_content=False)
        self.assertEqual(ctx.exception.status, 404)

    def test_service_allocation(self):
        ns = self.new_ns("svc")
        spec = client.V1ServiceSpec(type="NodePort", selector={"app": "x"},
                                    ports=[client.V1ServicePort(port=80, target_port=8080)])
        a = self.core.create_namespaced_service(
            ns, client.V1Service(metadata=client.V1ObjectMeta(name="a"), spec=spec))
        self.assertRegex(a.spec.cluster_ip, r"^10\.43\.")
        node_port = a.spec.ports[0].node_port
        self.assertTrue(30000 <= node_port <= 32767)
        # The same node port or cluster IP cannot be taken twice.
        taken = client.V1ServiceSpec(type="NodePort", cluster_ip=a.spec.cluster_ip,
                                     ports=[client.V1ServicePort(port=81)])
        with self.assertRaises(ApiException) as ctx:
            self.core.create_namespaced_service(
                ns, client.V1Service(metadata=client.V1ObjectMeta(name="b"), spec=taken))
        self.assertEqual(ctx.exception.status, 422)
        self.assertIn("provided IP is already allocated", status_of(ctx.exception)["message"])
        # Once deleted, its IP can be asked for again.
        self.core.delete_namespaced_service("a", ns)
        again = client.V1ServiceSpec(cluster_ip=a.spec.cluster_ip,
                                     ports=[client.V1ServicePort(port=80)])
        c = self.core.create_namespaced_service(
            ns, client.V1Service(metadata=client.V1ObjectMeta(name="c"), spec=again))
        self.assertEqual(c.spec.cluster_ip, a.spec.cluster_ip)
        # clusterIP is immutable.
        c.spec.cluster_ip = "10.43.200.200"
        c.spec.cluster_i_ps = ["10.43.200.200"]
        with self.assertRaises(ApiException) as ctx:
            self.core.replace_namespaced_service("c", ns, c)
        self.assertEqual(ctx.exception.status, 422)

    def test_events_views_and_ttl_lease(self):
        ns = self.new_ns("ev")
        ev = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="e1"),
            involved_object=client.V1ObjectReference(kind="Pod", name="p", namespace=ns),
            reason="Tested", message="hello", type="Normal",
            event_time=datetime.datetime.now(datetime.timezone.utc),
            reporting_component="e2e", reporting_instance="e2e-1")
        self.core.create_namespaced_event(ns, ev)
        events = client.EventsV1Api(self.api_client)
        same = events.read_namespaced_event("e1", ns)
        self.assertEqual(same.note, "hello")
        self.assertEqual(same.regarding.name, "p")
        self.assertEqual(same.reason, "Tested")
        listed = events.list_namespaced_event(ns, field_selector="regarding.name=p")
        self.assertEqual([e.metadata.name for e in listed.items], ["e1"])

    def test_job_immutable_fields(self):
        ns = self.new_ns("job")
        batch = client.BatchV1Api(self.api_client)
        job = client.V1Job(
            metadata=client.V1ObjectMeta(name="j"),
            spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="c", image="busybox:1.36")]))))
        created = batch.create_namespaced_job(ns, job)
        # Defaults as upstream: completions, parallelism, backoffLimit, a selector on the uid.
        self.assertEqual((created.spec.completions, created.spec.parallelism,
                          created.spec.backoff_limit), (1, 1, 6))
        # With parallelism alone the Job is a work queue: completions stays unset.
        queue = batch.create_namespaced_job(ns, client.V1Job(
            metadata=client.V1ObjectMeta(name="queue"),
            spec=client.V1JobSpec(parallelism=2, template=job.spec.template)))
        self.assertEqual((queue.spec.completions, queue.spec.parallelism), (None, 2))
        uid = created.metadata.uid
        self.assertEqual(created.spec.selector.match_labels,
                         {"batch.kubernetes.io/controller-uid": uid})
        with self.assertRaises(ApiException) as ctx:
            batch.patch_namespaced_job("j", ns, {"spec": {"completions": 3}})
        self.assertEqual(ctx.exception.status, 422)
        self.assertIn("spec.completions", status_of(ctx.exception)["message"])
        with self.assertRaises(ApiException) as ctx:
            batch.patch_namespaced_job("j", ns, {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "busybox:1.35"}]}}}})
        self.assertEqual(ctx.exception.status, 422)
        self.assertIn("field is immutable", status_of(ctx.exception)["message"])
        # Parallelism may change.
        patched = batch.patch_namespaced_job("j", ns, {"spec": {"parallelism": 2}})
        self.assertEqual(patched.spec.parallelism, 2)

    def test_token_auth(self):
        cfg = client.Configuration()
        cfg.host = "https://127.0.0.1:%d" % self.server.port
        cfg.ssl_ca_cert = self.server.ca
        cfg.api_key = {"authorization": "Bearer tok-admin-123"}
        with client.ApiClient(cfg) as api:
            names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
            self.assertIn("default", names)
        cfg2 = client.Configuration()
        cfg2.host = cfg.host
        cfg2.ssl_ca_cert = self.server.ca
        cfg2.api_key = {"authorization": "Bearer wrong"}
        with client.ApiClient(cfg2) as api:
            with self.assertRaises(ApiException) as cm:
                client.CoreV1Api(api).list_namespace()
            self.assertEqual(cm.exception.status, 401)

    def test_load_kube_config(self):
        """The documented entry point: config.load_kube_config(config_file=...)."""
        saved = client.Configuration.get_default_copy()
        try:
            config.load_kube_config(config_file=self.server.kubeconfig)
            v = client.VersionApi().get_code()
            self.assertEqual((v.major, v.minor), ("1", "32"))
            self.assertIn("kube-system",
                          [n.metadata.name for n in client.CoreV1Api().list_namespace().items])
        finally:
            client.Configuration.set_default(saved)


if __name__ == "__main__":
    unittest.main()
