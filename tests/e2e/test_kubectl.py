"""kubectl against a real skiff API server: every command that needs no kubelet.

Fixtures are created with `kubectl create -f - --validate=false` (JSON POST, no OpenAPI, no
protobuf) so that a test exercising one feature does not fail because of another. Tests whose
command needs a feature of its own say so in their docstring ("needs: ...").
"""

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import ServerTestCase, requires_modern_kubectl

tearDownModule = harness.stop_shared

BAD_NAME_MSG = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"


def table(out):
    """Splits kubectl's column output into rows of cells (header first)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]


def header(out):
    return re.split(r"\s{2,}", out.splitlines()[0].strip()) if out.strip() else []


@requires_modern_kubectl
class KubectlGet(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ns = "get-%d" % (os.getpid() % 10000)
        t = cls("test_version")
        t.create_json({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cls.ns}})
        for name, app in (("pod-c", "web"), ("pod-a", "db"), ("pod-b", "web")):
            t.make_pod(cls.ns, name, labels={"app": app, "tier": "t-" + app})

    def test_version(self):
        out = self.ok("version")
        self.assertRegex(out, r"(?m)^Server Version: v1\.32\.\d+")
        info = json.loads(self.ok("version", "-o", "json"))
        self.assertEqual(info["serverVersion"]["major"], "1")
        self.assertEqual(info["serverVersion"]["minor"], "32")
        for key in ("gitVersion", "gitCommit", "platform", "goVersion"):
            self.assertIn(key, info["serverVersion"])

    def test_get_namespaces(self):
        out = self.ok("get", "ns")
        names = [row[0] for row in table(out)[1:]]
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease", self.ns):
            self.assertIn(ns, names)
        self.assertEqual(header(out)[0], "NAME")

    def test_get_namespace_json(self):
        obj = self.get_json("ns", self.ns)
        self.assertEqual(obj["kind"], "Namespace")
        self.assertEqual(obj["metadata"]["name"], self.ns)
        self.assertEqual(obj["status"]["phase"], "Active")
        self.assertIn("kubernetes", obj["spec"].get("finalizers", []))
        self.assertEqual(obj["metadata"]["labels"]["kubernetes.io/metadata.name"], self.ns)

    def test_get_pods_names(self):
        out = self.ok("get", "pods", "-n", self.ns)
        self.assertEqual(header(out)[0], "NAME")
        self.assertEqual(sorted(r[0] for r in table(out)[1:]), ["pod-a", "pod-b", "pod-c"])

    def test_get_pod_missing(self):
        out = self.fails("get", "pod", "nope", "-n", self.ns)
        self.assertIn('Error from server (NotFound): pods "nope" not found', out)

    def test_get_pods_output_name(self):
        out = self.ok("get", "pods", "-n", self.ns, "-o", "name")
        self.assertEqual(sorted(out.split()), ["pod/pod-a", "pod/pod-b", "pod/pod-c"])

    def test_get_pods_output_json(self):
        lst = self.get_json("pods", "-n", self.ns)
        self.assertEqual(lst["kind"], "List")
        self.assertEqual(len(lst["items"]), 3)
        pod = [p for p in lst["items"] if p["metadata"]["name"] == "pod-a"][0]
        self.assertEqual(pod["kind"], "Pod")
        self.assertEqual(pod["apiVersion"], "v1")
        self.assertEqual(pod["metadata"]["namespace"], self.ns)
        self.assertTrue(pod["metadata"]["uid"])
        self.assertTrue(pod["metadata"]["resourceVersion"])
        self.assertTrue(pod["metadata"]["creationTimestamp"])
        self.assertEqual(pod["spec"]["containers"][0]["image"], "busybox:1.36")
        # defaults
        self.assertEqual(pod["spec"]["restartPolicy"], "Always")
        self.assertEqual(pod["spec"]["dnsPolicy"], "ClusterFirst")
        self.assertEqual(pod["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent")
        self.assertEqual(pod["spec"]["containers"][0]["terminationMessagePath"],
                         "/dev/termination-log")
        self.assertEqual(pod["status"]["phase"], "Pending")

    def test_get_pod_output_yaml(self):
        out = self.ok("get", "pod", "pod-a", "-n", self.ns, "-o", "yaml")
        self.assertRegex(out, r"(?m)^kind: Pod$")
        self.assertRegex(out, r"(?m)^apiVersion: v1$")
        self.assertRegex(out, r"(?m)^  name: pod-a$")
        self.assertRegex(out, r"(?m)^  namespace: %s$" % re.escape(self.ns))

    def test_get_pods_wide(self):
        out = self.ok("get", "pods", "-n", self.ns, "-o", "wide")
        self.assertEqual(sorted(r[0] for r in table(out)[1:]), ["pod-a", "pod-b", "pod-c"])

    def test_get_pods_all_namespaces(self):
        out = self.ok("get", "pods", "-A")
        rows = table(out)
        self.assertEqual(rows[0][0], "NAMESPACE")
        self.assertEqual(rows[0][1], "NAME")
        mine = sorted(r[1] for r in rows[1:] if r[0] == self.ns)
        self.assertEqual(mine, ["pod-a", "pod-b", "pod-c"])

    def test_get_pods_label_selector(self):
        out = self.ok("get", "pods", "-n", self.ns, "-l", "app=web", "-o", "name")
        self.assertEqual(sorted(out.split()), ["pod/pod-b", "pod/pod-c"])
        out = self.ok("get", "pods", "-n", self.ns, "-l", "app!=web", "-o", "name")
        self.assertEqual(out.split(), ["pod/pod-a"])
        out = self.ok("get", "pods", "-n", self.ns, "-l", "tier in (t-db,t-x)", "-o", "name")
        self.assertEqual(out.split(), ["pod/pod-a"])
        rc, out, err = self.kubectl("get", "pods", "-n", self.ns, "-l", "app=none")
        self.assertEqual(rc, 0)
        self.assertEqual(out, "")
        self.assertIn("No resources found in %s namespace." % self.ns, err)

    def test_get_pods_field_selector(self):
        out = self.ok("get", "pods", "-n", self.ns, "--field-selector", "metadata.name=pod-b",
                      "-o", "name")
        self.assertEqual(out.split(), ["pod/pod-b"])

    def test_get_pods_show_labels(self):
        out = self.ok("get", "pods", "-n", self.ns, "--show-labels")
        rows = table(out)
        self.assertEqual(rows[0][-1], "LABELS")
        labels = {r[0]: r[-1] for r in rows[1:]}
        self.assertEqual(labels["pod-a"], "app=db,tier=t-db")
        self.assertEqual(labels["pod-c"], "app=web,tier=t-web")

    def test_get_pods_sort_by(self):
        out = self.ok("get", "pods", "-n", self.ns, "--sort-by", ".metadata.name")
        self.assertEqual([r[0] for r in table(out)[1:]], ["pod-a", "pod-b", "pod-c"])
        out = self.ok("get", "pods", "-n", self.ns, "--sort-by", ".metadata.creationTimestamp",
                      "-o", "name")
        # created c, a, b (one second apart is not guaranteed, so only check membership)
        self.assertEqual(sorted(out.split()), ["pod/pod-a", "pod/pod-b", "pod/pod-c"])

    def test_get_custom_columns(self):
        out = self.ok("get", "pods", "-n", self.ns, "-o",
                      "custom-columns=N:.metadata.name,APP:.metadata.labels.app", "--sort-by",
                      ".metadata.name")
        self.assertEqual(table(out), [["N", "APP"], ["pod-a", "db"], ["pod-b", "web"],
                                      ["pod-c", "web"]])

    def test_get_jsonpath(self):
        out = self.ok("get", "pod", "pod-b", "-n", self.ns, "-o",
                      "jsonpath={.metadata.labels.tier}")
        self.assertEqual(out, "t-web")

    def test_get_all(self):
        ns = self.make_namespace("all")
        self.make_deployment(ns, "web")
        self.create_json({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "websvc", "namespace": ns},
                          "spec": {"selector": {"app": "web"},
                                   "ports": [{"port": 80, "targetPort": 8080}]}})
        self.make_pod(ns, "lone")
        out = self.ok("get", "all", "-n", ns)
        names = [r[0] for r in table(out) if r]
        self.assertIn("pod/lone", names)
        self.assertIn("service/websvc", names)
        self.assertIn("deployment.apps/web", names)

    def test_get_watch(self):
        ns = self.make_namespace("watch")
        self.make_configmap(ns, "first")
        proc = self.server.kubectl_popen("get", "configmaps", "-n", ns, "-w", "--output-watch-events")
        lines, seen = [], threading.Event()

        def reader():
            for line in proc.stdout:
                lines.append(line)
                if "second" in line:
                    seen.set()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            deadline = time.time() + 20
            while time.time() < deadline and not any("first" in l for l in lines):
                time.sleep(0.1)
            self.assertTrue(any("first" in l for l in lines),
                            "initial list not printed: %r" % lines)
            self.make_configmap(ns, "second")
            self.assertTrue(seen.wait(20), "watch did not show the new object: %r" % lines)
            self.ok("delete", "configmap", "second", "-n", ns)
            deadline = time.time() + 20
            while time.time() < deadline and not any(
                    "DELETED" in l and "second" in l for l in lines):
                time.sleep(0.1)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(10)
            t.join(5)
            stderr = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        added = [l for l in lines if "second" in l]
        self.assertTrue(added[0].split()[0] == "ADDED", "first event for 'second': %r" % added)
        self.assertTrue(any(l.split()[0] == "DELETED" for l in added),
                        "no DELETED event: %r (stderr %s)" % (lines, stderr))


@requires_modern_kubectl
class KubectlCreateGenerators(ServerTestCase):
    """`kubectl create <kind> ...`: kubectl 1.32 sends these as protobuf (needs: protobuf request
    bodies); the *_json_client variants run kubectl 1.31, which sends JSON."""

    def _generators(self, version):
        ns = self.uniq("gen")
        v = {"version": version}
        self.assertEqual(self.ok("create", "namespace", ns, **v).strip(), "namespace/%s created" % ns)
        self.assertEqual(self.get_json("ns", ns)["status"]["phase"], "Active")

        out = self.ok("create", "configmap", "cfg", "-n", ns, "--from-literal=a=1",
                      "--from-literal=b=two", **v)
        self.assertEqual(out.strip(), "configmap/cfg created")
        self.assertEqual(self.get_json("cm", "cfg", "-n", ns)["data"], {"a": "1", "b": "two"})

        out = self.ok("create", "secret", "generic", "sec", "-n", ns, "--from-literal=pw=s3cret", **v)
        self.assertEqual(out.strip(), "secret/sec created")
        sec = self.get_json("secret", "sec", "-n", ns)
        self.assertEqual(sec["type"], "Opaque")
        self.assertEqual(base64.b64decode(sec["data"]["pw"]).decode(), "s3cret")

        out = self.ok("create", "deployment", "web", "-n", ns, "--image=busybox:1.36",
                      "--replicas=2", **v)
        self.assertEqual(out.strip(), "deployment.apps/web created")
        dep = self.get_json("deployment", "web", "-n", ns)
        self.assertEqual(dep["spec"]["replicas"], 2)
        self.assertEqual(dep["spec"]["selector"], {"matchLabels": {"app": "web"}})
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.36")
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["name"], "busybox")
        self.assertEqual(dep["spec"]["revisionHistoryLimit"], 10)

        out = self.ok("create", "service", "clusterip", "svc", "-n", ns, "--tcp=80:8080", **v)
        self.assertEqual(out.strip(), "service/svc created")
        svc = self.get_json("svc", "svc", "-n", ns)
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertRegex(svc["spec"]["clusterIP"], r"^10\.43\.\d+\.\d+$")
        self.assertEqual(svc["spec"]["ports"][0]["port"], 80)
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], 8080)
        self.assertEqual(svc["spec"]["ports"][0]["protocol"], "TCP")

        out = self.ok("create", "job", "once", "-n", ns, "--image=busybox:1.36", "--", "echo", "hi",
                      **v)
        self.assertEqual(out.strip(), "job.batch/once created")
        job = self.get_json("job", "once", "-n", ns)
        self.assertEqual(job["spec"]["template"]["spec"]["containers"][0]["command"], ["echo", "hi"])
        self.assertEqual(job["spec"]["template"]["spec"]["restartPolicy"], "Never")

        out = self.ok("create", "serviceaccount", "robot", "-n", ns, **v)
        self.assertEqual(out.strip(), "serviceaccount/robot created")
        self.assertEqual(self.get_json("sa", "robot", "-n", ns)["metadata"]["name"], "robot")

        # duplicates
        out = self.fails("create", "namespace", ns, **v)
        self.assertIn('Error from server (AlreadyExists): namespaces "%s" already exists' % ns, out)
        out = self.fails("create", "deployment", "web", "-n", ns, "--image=busybox", **v)
        self.assertIn('error: failed to create deployment: deployments.apps "web" already exists', out)

        # kubectl sends "strategy": {}; the server defaults it as upstream does
        self.assertEqual(dep["spec"]["strategy"], {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})

    def test_create_generators(self):
        """needs: protobuf request bodies (kubectl 1.32)."""
        self._generators(None)

    def test_create_generators_json_client(self):
        self._generators("1.31")

    def test_create_generator_dry_run_server(self):
        """needs: protobuf request bodies."""
        ns = self.make_namespace("dry")
        out = self.ok("create", "configmap", "ghost", "-n", ns, "--from-literal=a=b",
                      "--dry-run=server")
        self.assertEqual(out.strip(), "configmap/ghost created (server dry run)")
        self.fails("get", "configmap", "ghost", "-n", ns)


@requires_modern_kubectl
class KubectlPriorityClasses(ServerTestCase):
    """PriorityClasses: the system classes the server keeps, `kubectl create priorityclass`, and
    pods getting their class's priority at admission."""

    def test_priority_classes_and_pod_priority(self):
        names = self.ok("get", "priorityclasses", "-o", "name").split()
        self.assertIn("priorityclass.scheduling.k8s.io/system-node-critical", names)
        self.assertIn("priorityclass.scheduling.k8s.io/system-cluster-critical", names)
        self.assertEqual(self.get_json("pc", "system-node-critical")["value"], 2000001000)
        out = self.fails("delete", "priorityclass", "system-cluster-critical")
        self.assertIn('Error from server (Forbidden): priorityclasses.scheduling.k8s.io '
                      '"system-cluster-critical" is forbidden: this is a system priority class '
                      'and cannot be deleted', out)

        high = self.uniq("high")
        out = self.ok("create", "priorityclass", high, "--value=1000", "--description=important",
                      "--preemption-policy=Never")
        self.assertEqual(out.strip(), "priorityclass.scheduling.k8s.io/%s created" % high)
        pc = self.get_json("pc", high)
        self.assertEqual((pc["value"], pc["description"], pc["preemptionPolicy"]),
                         (1000, "important", "Never"))
        out = self.fails("create", "priorityclass", "system-mine", "--value=5")
        self.assertIn('PriorityClass.scheduling.k8s.io "system-mine" is invalid: metadata.name: '
                      "Forbidden: priority class names with 'system-' prefix are reserved for "
                      "system use only. error: system-mine is not a known system priority class",
                      out)

        ns = self.make_namespace("prio")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vip"},
               "spec": {"priorityClassName": high,
                        "containers": [{"name": "c", "image": "busybox:1.36"}]}}
        self.create_json(pod, namespace=ns)
        spec = self.get_json("pod", "vip", "-n", ns)["spec"]
        self.assertEqual((spec["priority"], spec["preemptionPolicy"]), (1000, "Never"))

        pod["metadata"]["name"] = "lost"
        pod["spec"]["priorityClassName"] = "no-such-class"
        rc, _, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns,
                                  input=json.dumps(pod))
        self.assertEqual(rc, 1)
        self.assertIn('Error from server (Forbidden): error when creating "STDIN": pods "lost" is '
                      'forbidden: no PriorityClass with name no-such-class was found', err)
        self.fails("get", "pod", "lost", "-n", ns)
        self.ok("delete", "pc", high)


class KubectlApplyReplace(ServerTestCase):

    def deployment_yaml(self, name, image, replicas=1, extra_spec=""):
        return """apiVersion: apps/v1
kind: Deployment
metadata:
  name: %(name)s
  labels:
    app: %(name)s
spec:
  replicas: %(replicas)d
  selector:
    matchLabels:
      app: %(name)s
  template:
    metadata:
      labels:
        app: %(name)s
    spec:
      containers:
      - name: main
        image: %(image)s
%(extra)s""" % {"name": name, "image": image, "replicas": replicas, "extra": extra_spec}

    def test_create_from_file(self):
        """needs: OpenAPI v3 (default validation)."""
        ns = self.make_namespace("cf")
        path = self.server.write("cf.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                 "  name: fromfile\ndata:\n  x: \"1\"\n")
        out = self.ok("create", "-f", path, "-n", ns)
        self.assertEqual(out.strip(), "configmap/fromfile created")
        self.assertEqual(self.get_json("cm", "fromfile", "-n", ns)["data"], {"x": "1"})

    def test_create_from_file_no_validation(self):
        ns = self.make_namespace("cfnv")
        path = self.server.write("cfnv.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                 "  name: fromfile\ndata:\n  x: \"1\"\n---\napiVersion: v1\n"
                                 "kind: Secret\nmetadata:\n  name: s1\nstringData:\n  k: v\n")
        out = self.ok("create", "-f", path, "-n", ns, "--validate=false")
        self.assertEqual(out.split("\n")[:2], ["configmap/fromfile created", "secret/s1 created"])
        self.assertEqual(self.get_json("cm", "fromfile", "-n", ns)["data"], {"x": "1"})
        sec = self.get_json("secret", "s1", "-n", ns)
        self.assertEqual(base64.b64decode(sec["data"]["k"]).decode(), "v")
        self.assertNotIn("stringData", sec)

    def _apply_cycle(self, ns, extra_args=()):
        path = self.server.write("app-%s.yaml" % ns, self.deployment_yaml("web", "nginx:1.25"))
        out = self.ok("apply", "-f", path, "-n", ns, *extra_args)
        self.assertEqual(out.strip(), "deployment.apps/web created")
        dep = self.get_json("deploy", "web", "-n", ns)
        last = json.loads(dep["metadata"]["annotations"]
                          ["kubectl.kubernetes.io/last-applied-configuration"])
        self.assertEqual(last["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25")

        self.server.write("app-%s.yaml" % ns, self.deployment_yaml("web", "nginx:1.26", replicas=2))
        out = self.ok("apply", "-f", path, "-n", ns, *extra_args)
        self.assertEqual(out.strip(), "deployment.apps/web configured")
        dep2 = self.get_json("deploy", "web", "-n", ns)
        self.assertEqual(dep2["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26")
        self.assertEqual(dep2["spec"]["replicas"], 2)
        self.assertEqual(len(dep2["spec"]["template"]["spec"]["containers"]), 1)
        self.assertEqual(dep2["metadata"]["uid"], dep["metadata"]["uid"])
        self.assertGreater(dep2["metadata"]["generation"], dep["metadata"]["generation"])

        out = self.ok("apply", "-f", path, "-n", ns, *extra_args)
        self.assertEqual(out.strip(), "deployment.apps/web unchanged")
        dep3 = self.get_json("deploy", "web", "-n", ns)
        self.assertEqual(dep3["metadata"]["resourceVersion"], dep2["metadata"]["resourceVersion"])

    def test_apply_dry_run_diff_delete(self):
        """Server-side dry run (apply --dry-run=server, diff) writes nothing; delete -f removes."""
        ns = self.make_namespace("dry")
        path = self.server.write("dry-%s.yaml" % ns, self.deployment_yaml("web", "nginx:1.25"))
        self.assertEqual(self.ok("apply", "-f", path, "-n", ns, "--validate=false").strip(),
                         "deployment.apps/web created")
        before = self.get_json("deploy", "web", "-n", ns)
        self.server.write("dry-%s.yaml" % ns, self.deployment_yaml("web", "nginx:1.26"))
        out = self.ok("apply", "-f", path, "-n", ns, "--validate=false", "--dry-run=server")
        self.assertEqual(out.strip(), "deployment.apps/web configured (server dry run)")
        rc, out, err = self.kubectl("diff", "-f", path, "-n", ns)
        self.assertEqual(rc, 1, "kubectl diff: rc %d (1 means differences found)\n%s%s" %
                         (rc, out, err))
        self.assertRegex(out, r"(?m)^-\s+- image: nginx:1\.25$")
        self.assertRegex(out, r"(?m)^\+\s+- image: nginx:1\.26$")
        after = self.get_json("deploy", "web", "-n", ns)
        self.assertEqual(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"])
        self.assertEqual(after["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25")
        self.assertEqual(self.ok("delete", "-f", path, "-n", ns).strip(),
                         'deployment.apps "web" deleted')
        self.fails("get", "deploy", "web", "-n", ns)

    def test_apply(self):
        """needs: OpenAPI v3 (default validation)."""
        self._apply_cycle(self.make_namespace("apply"))

    def test_apply_no_validation(self):
        self._apply_cycle(self.make_namespace("applynv"), ("--validate=false",))

    def test_apply_removes_field(self):
        """Three-way merge: a label dropped from the manifest is removed from the object."""
        ns = self.make_namespace("apprm")
        cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels:\n%sdata:\n  a: \"1\"\n%s"
        path = self.server.write("rm.yaml", cm % ("    keep: \"y\"\n    drop: \"y\"\n", "  b: \"2\"\n"))
        self.assertEqual(self.ok("apply", "-f", path, "-n", ns, "--validate=false").strip(),
                         "configmap/c created")
        self.server.write("rm.yaml", cm % ("    keep: \"y\"\n", ""))
        self.assertEqual(self.ok("apply", "-f", path, "-n", ns, "--validate=false").strip(),
                         "configmap/c configured")
        obj = self.get_json("cm", "c", "-n", ns)
        self.assertEqual(obj["metadata"]["labels"], {"keep": "y"})
        self.assertEqual(obj["data"], {"a": "1"})

    def test_apply_server_side(self):
        """needs: OpenAPI v3 (validation) and server-side apply."""
        ns = self.make_namespace("ssa")
        path = self.server.write("ssa.yaml", self.deployment_yaml("web2", "nginx:1.25"))
        out = self.ok("apply", "--server-side", "-f", path, "-n", ns)
        self.assertEqual(out.strip(), "deployment.apps/web2 serverside-applied")
        dep = self.get_json("deploy", "web2", "-n", ns)
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25")
        self.assertNotIn("kubectl.kubernetes.io/last-applied-configuration",
                         dep["metadata"].get("annotations", {}))
        first = dep

        self.server.write("ssa.yaml", self.deployment_yaml("web2", "nginx:1.26", replicas=3))
        out = self.ok("apply", "--server-side", "-f", path, "-n", ns)
        self.assertEqual(out.strip(), "deployment.apps/web2 serverside-applied")
        dep = self.get_json("deploy", "web2", "-n", ns, "--show-managed-fields")
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26")
        self.assertEqual(dep["spec"]["replicas"], 3)
        self.assertEqual(dep["metadata"]["uid"], first["metadata"]["uid"])
        # field ownership is recorded
        managers = {(m["manager"], m["operation"]) for m in dep["metadata"].get("managedFields", [])}
        self.assertIn(("kubectl", "Apply"), managers, dep["metadata"])
        entry = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "kubectl"][0]
        self.assertEqual(entry["fieldsType"], "FieldsV1")
        self.assertIn("f:spec", entry["fieldsV1"])

    def test_apply_server_side_conflict(self):
        """needs: server-side apply. Another manager owning a field → conflict without --force-conflicts."""
        ns = self.make_namespace("ssac")
        path = self.server.write("ssac.yaml", self.deployment_yaml("web3", "nginx:1.25"))
        self.ok("apply", "--server-side", "-f", path, "-n", ns, "--validate=false")
        self.ok("scale", "deployment", "web3", "-n", ns, "--replicas=5")
        self.ok("set", "image", "deployment/web3", "-n", ns, "main=nginx:1.27")
        out = self.fails("apply", "--server-side", "-f", path, "-n", ns, "--validate=false")
        self.assertIn("conflict", out.lower())
        self.assertIn(".spec.template.spec.containers", out)
        out = self.ok("apply", "--server-side", "--force-conflicts", "-f", path, "-n", ns,
                      "--validate=false")
        self.assertEqual(out.strip(), "deployment.apps/web3 serverside-applied")
        dep = self.get_json("deploy", "web3", "-n", ns)
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25")

    def _replace(self, ns, extra_args=()):
        self.make_configmap(ns, "rep", data={"v": "1"})
        obj = self.get_json("cm", "rep", "-n", ns)
        stale = json.loads(json.dumps(obj))
        obj["data"]["v"] = "2"
        path = self.server.write("rep-%s.json" % ns, json.dumps(obj))
        out = self.ok("replace", "-f", path, *extra_args)
        self.assertEqual(out.strip(), "configmap/rep replaced")
        now = self.get_json("cm", "rep", "-n", ns)
        self.assertEqual(now["data"], {"v": "2"})
        self.assertNotEqual(now["metadata"]["resourceVersion"], stale["metadata"]["resourceVersion"])

        stale["data"]["v"] = "3"
        path = self.server.write("stale-%s.json" % ns, json.dumps(stale))
        out = self.fails("replace", "-f", path, *extra_args)
        self.assertIn('Error from server (Conflict): error when replacing "%s": Operation cannot be '
                      'fulfilled on configmaps "rep": the object has been modified; please apply '
                      'your changes to the latest version and try again' % path, out)
        self.assertEqual(self.get_json("cm", "rep", "-n", ns)["data"], {"v": "2"})

    def test_replace(self):
        """needs: OpenAPI v3 (default validation)."""
        self._replace(self.make_namespace("rep"))

    def test_replace_no_validation(self):
        self._replace(self.make_namespace("repnv"), ("--validate=false",))

    def test_edit_scripted_editor(self):
        """needs: OpenAPI v3 (default validation)."""
        ns = self.make_namespace("edit")
        self.make_configmap(ns, "ed", data={"color": "blue"})
        out = self.ok("edit", "cm", "ed", "-n", ns,
                      env={"KUBE_EDITOR": "sed -i s/blue/green/"})
        self.assertEqual(out.strip(), "configmap/ed edited")
        self.assertEqual(self.get_json("cm", "ed", "-n", ns)["data"], {"color": "green"})

    def test_edit_no_validation(self):
        ns = self.make_namespace("editnv")
        self.make_deployment(ns, "ed", image="nginx:1.25")
        out = self.ok("edit", "deploy", "ed", "-n", ns, "--validate=false",
                      env={"EDITOR": "sed -i s/nginx:1.25/nginx:1.26/"})
        self.assertEqual(out.strip(), "deployment.apps/ed edited")
        dep = self.get_json("deploy", "ed", "-n", ns)
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26")
        # no change → "Edit cancelled, no changes made."
        rc, out, err = self.kubectl("edit", "deploy", "ed", "-n", ns, "--validate=false",
                                    env={"EDITOR": "true"})
        self.assertEqual(rc, 0, err)
        self.assertIn("Edit cancelled, no changes made.", out + err)


@requires_modern_kubectl
class KubectlMutate(ServerTestCase):

    def test_patch_strategic(self):
        ns = self.make_namespace("psm")
        self.make_deployment(ns, "d", image="nginx:1.25")
        p = json.dumps({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "busybox:1.36"}]}}}})
        self.assertEqual(self.ok("patch", "deployment", "d", "-n", ns, "-p", p).strip(),
                         "deployment.apps/d patched")
        cs = self.get_json("deploy", "d", "-n", ns)["spec"]["template"]["spec"]["containers"]
        self.assertEqual(sorted((c["name"], c["image"]) for c in cs),
                         [("main", "nginx:1.25"), ("sidecar", "busybox:1.36")])
        # merge by key: change one container's image in place
        p = json.dumps({"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "nginx:1.26"}]}}}})
        self.ok("patch", "deployment", "d", "-n", ns, "--type=strategic", "-p", p)
        cs = self.get_json("deploy", "d", "-n", ns)["spec"]["template"]["spec"]["containers"]
        self.assertEqual(sorted((c["name"], c["image"]) for c in cs),
                         [("main", "nginx:1.26"), ("sidecar", "busybox:1.36")])
        # $patch: delete directive
        p = json.dumps({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}]}}}})
        self.ok("patch", "deployment", "d", "-n", ns, "-p", p)
        cs = self.get_json("deploy", "d", "-n", ns)["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in cs], ["main"])
        # no-op
        self.assertEqual(self.ok("patch", "deployment", "d", "-n", ns, "-p", p).strip(),
                         "deployment.apps/d patched (no change)")

    def test_patch_merge(self):
        ns = self.make_namespace("pm")
        self.make_deployment(ns, "d", image="nginx:1.25")
        p = json.dumps({"metadata": {"labels": {"team": "a"}},
                        "spec": {"template": {"spec": {"containers": [
                            {"name": "other", "image": "busybox:1.36"}]}}}})
        self.assertEqual(self.ok("patch", "deployment", "d", "-n", ns, "--type=merge", "-p", p)
                         .strip(), "deployment.apps/d patched")
        dep = self.get_json("deploy", "d", "-n", ns)
        self.assertEqual(dep["metadata"]["labels"], {"app": "d", "team": "a"})
        # RFC 7386: lists are replaced wholesale
        self.assertEqual([c["name"] for c in dep["spec"]["template"]["spec"]["containers"]],
                         ["other"])
        p = json.dumps({"metadata": {"labels": {"team": None}}})
        self.ok("patch", "deployment", "d", "-n", ns, "--type=merge", "-p", p)
        self.assertEqual(self.get_json("deploy", "d", "-n", ns)["metadata"]["labels"], {"app": "d"})

    def test_patch_json(self):
        ns = self.make_namespace("pj")
        self.make_deployment(ns, "d", image="nginx:1.25")
        p = json.dumps([{"op": "replace", "path": "/spec/replicas", "value": 4},
                        {"op": "add", "path": "/metadata/labels/extra", "value": "yes"}])
        self.assertEqual(self.ok("patch", "deployment", "d", "-n", ns, "--type=json", "-p", p)
                         .strip(), "deployment.apps/d patched")
        dep = self.get_json("deploy", "d", "-n", ns)
        self.assertEqual(dep["spec"]["replicas"], 4)
        self.assertEqual(dep["metadata"]["labels"]["extra"], "yes")
        # a failing test op → 422, nothing changed
        p = json.dumps([{"op": "test", "path": "/spec/replicas", "value": 9},
                        {"op": "replace", "path": "/spec/replicas", "value": 1}])
        rc, out, err = self.kubectl("patch", "deployment", "d", "-n", ns, "--type=json", "-p", p)
        self.assertNotEqual(rc, 0, out)
        self.assertEqual(self.get_json("deploy", "d", "-n", ns)["spec"]["replicas"], 4)

    def test_patch_missing_object(self):
        ns = self.make_namespace("pmiss")
        out = self.fails("patch", "configmap", "nope", "-n", ns, "--type=merge", "-p",
                         '{"data":{"a":"b"}}')
        self.assertIn('Error from server (NotFound): configmaps "nope" not found', out)

    def test_label(self):
        ns = self.make_namespace("lbl")
        self.make_pod(ns, "x")
        self.assertEqual(self.ok("label", "pod", "x", "-n", ns, "env=prod").strip(), "pod/x labeled")
        self.assertEqual(self.get_json("pod", "x", "-n", ns)["metadata"]["labels"], {"env": "prod"})
        out = self.fails("label", "pod", "x", "-n", ns, "env=dev")
        self.assertIn("error: 'env' already has a value (prod), and --overwrite is false", out)
        self.assertEqual(self.ok("label", "pod", "x", "-n", ns, "env=dev", "--overwrite").strip(),
                         "pod/x labeled")
        self.assertEqual(self.get_json("pod", "x", "-n", ns)["metadata"]["labels"], {"env": "dev"})
        self.assertEqual(self.ok("label", "pod", "x", "-n", ns, "env-").strip(), "pod/x unlabeled")
        self.assertEqual(self.get_json("pod", "x", "-n", ns)["metadata"].get("labels", {}), {})
        # invalid label value → 422 from the server (kubectl label would refuse it client-side)
        out = self.fails("patch", "pod", "x", "-n", ns, "--type=merge", "-p",
                         '{"metadata":{"labels":{"bad":"-not-valid-"}}}')
        self.assertIn('The Pod "x" is invalid: metadata.labels: Invalid value: "-not-valid-"', out)

    def test_annotate(self):
        ns = self.make_namespace("ann")
        self.make_configmap(ns, "c")
        self.assertEqual(self.ok("annotate", "cm", "c", "-n", ns, "note=hello world").strip(),
                         "configmap/c annotated")
        self.assertEqual(self.get_json("cm", "c", "-n", ns)["metadata"]["annotations"],
                         {"note": "hello world"})
        out = self.fails("annotate", "cm", "c", "-n", ns, "note=x")
        self.assertIn("error: --overwrite is false but found the following declared annotation(s): "
                      "'note' already has a value (hello world)", out)
        self.ok("annotate", "cm", "c", "-n", ns, "note=x", "--overwrite")
        self.assertEqual(self.get_json("cm", "c", "-n", ns)["metadata"]["annotations"], {"note": "x"})
        self.assertEqual(self.ok("annotate", "cm", "c", "-n", ns, "note-").strip(),
                         "configmap/c annotated")
        self.assertEqual(self.get_json("cm", "c", "-n", ns)["metadata"].get("annotations", {}), {})

    def test_label_all_by_selector(self):
        ns = self.make_namespace("lsel")
        for n in ("a", "b", "c"):
            self.make_configmap(ns, n, labels={"grp": "x" if n != "c" else "y"})
        out = self.ok("label", "cm", "-n", ns, "-l", "grp=x", "seen=1")
        self.assertEqual(sorted(out.split("\n")[:2]), ["configmap/a labeled", "configmap/b labeled"])
        self.assertEqual(self.ok("get", "cm", "-n", ns, "-l", "seen=1", "-o", "name").split(),
                         ["configmap/a", "configmap/b"])

    def test_scale(self):
        ns = self.make_namespace("scale")
        self.make_deployment(ns, "d")
        self.assertEqual(self.ok("scale", "deployment", "d", "-n", ns, "--replicas=3").strip(),
                         "deployment.apps/d scaled")
        self.assertEqual(self.get_json("deploy", "d", "-n", ns)["spec"]["replicas"], 3)
        scale = json.loads(self.ok("get", "--raw",
                                   "/apis/apps/v1/namespaces/%s/deployments/d/scale" % ns))
        self.assertEqual(scale["kind"], "Scale")
        self.assertEqual(scale["apiVersion"], "autoscaling/v1")
        self.assertEqual(scale["spec"]["replicas"], 3)
        self.assertEqual(scale["metadata"]["name"], "d")
        # precondition on the current count
        out = self.fails("scale", "deployment", "d", "-n", ns, "--current-replicas=2", "--replicas=1")
        self.assertIn("error: Expected replicas to be 2, was 3", out)
        self.assertEqual(self.get_json("deploy", "d", "-n", ns)["spec"]["replicas"], 3)

    def test_delete(self):
        ns = self.make_namespace("del")
        self.make_configmap(ns, "gone")
        self.make_pod(ns, "p")
        self.assertEqual(self.ok("delete", "configmap", "gone", "-n", ns).strip(),
                         'configmap "gone" deleted')
        out = self.fails("get", "configmap", "gone", "-n", ns)
        self.assertIn('Error from server (NotFound): configmaps "gone" not found', out)
        # a pod with no node is deleted at once (no kubelet to wait for)
        self.assertEqual(self.ok("delete", "pod", "p", "-n", ns, timeout=60).strip(),
                         'pod "p" deleted')
        self.fails("get", "pod", "p", "-n", ns)
        out = self.fails("delete", "configmap", "gone", "-n", ns)
        self.assertIn('Error from server (NotFound): configmaps "gone" not found', out)
        rc, out, err = self.kubectl("delete", "configmap", "gone", "-n", ns, "--ignore-not-found")
        self.assertEqual((rc, out), (0, ""))

    def test_delete_by_label_and_namespace(self):
        ns = self.make_namespace("dell")
        for n in ("a", "b", "c"):
            self.make_configmap(ns, n, labels={"del": "yes" if n != "c" else "no"})
        out = self.ok("delete", "cm", "-n", ns, "-l", "del=yes")
        self.assertEqual(sorted(out.strip().split("\n")),
                         ['configmap "a" deleted', 'configmap "b" deleted'])
        self.assertEqual(self.ok("get", "cm", "-n", ns, "-l", "del", "-o", "name").split(),
                         ["configmap/c"])
        out = self.ok("delete", "namespace", ns, "--wait=false")
        self.assertEqual(out.strip(), 'namespace "%s" deleted' % ns)

    def test_describe(self):
        ns = self.make_namespace("desc")
        self.make_pod(ns, "p", labels={"app": "demo"})
        self.make_deployment(ns, "d", image="nginx:1.25", replicas=2)
        out = self.ok("describe", "pod", "p", "-n", ns)
        self.assertRegex(out, r"(?m)^Name:\s+p$")
        self.assertRegex(out, r"(?m)^Namespace:\s+%s$" % re.escape(ns))
        self.assertRegex(out, r"(?m)^Labels:\s+app=demo$")
        self.assertRegex(out, r"(?m)^Status:\s+Pending$")
        self.assertRegex(out, r"(?m)^    Image:\s+busybox:1\.36$")
        self.assertRegex(out, r"(?m)^Events:\s+<none>$")
        out = self.ok("describe", "deployment", "d", "-n", ns)
        self.assertRegex(out, r"(?m)^Name:\s+d$")
        self.assertRegex(out, r"(?m)^Selector:\s+app=d$")
        self.assertRegex(out, r"(?m)^Replicas:\s+2 desired")
        self.assertRegex(out, r"(?m)^StrategyType:\s+RollingUpdate$")
        self.assertRegex(out, r"(?m)^\s+Image:\s+nginx:1\.25$")


@requires_modern_kubectl
class KubectlDiscovery(ServerTestCase):

    def test_api_resources(self):
        out = self.ok("api-resources")
        rows = {}
        for line in out.splitlines()[1:]:
            cells = line.split()
            rows.setdefault(cells[0], []).append(cells)
        expect = {
            "pods": ["pods", "po", "v1", "true", "Pod"],
            "namespaces": ["namespaces", "ns", "v1", "false", "Namespace"],
            "services": ["services", "svc", "v1", "true", "Service"],
            "configmaps": ["configmaps", "cm", "v1", "true", "ConfigMap"],
            "serviceaccounts": ["serviceaccounts", "sa", "v1", "true", "ServiceAccount"],
            "nodes": ["nodes", "no", "v1", "false", "Node"],
            "deployments": ["deployments", "deploy", "apps/v1", "true", "Deployment"],
            "replicasets": ["replicasets", "rs", "apps/v1", "true", "ReplicaSet"],
            "daemonsets": ["daemonsets", "ds", "apps/v1", "true", "DaemonSet"],
            "statefulsets": ["statefulsets", "sts", "apps/v1", "true", "StatefulSet"],
            "cronjobs": ["cronjobs", "cj", "batch/v1", "true", "CronJob"],
            "jobs": ["jobs", "batch/v1", "true", "Job"],
            "secrets": ["secrets", "v1", "true", "Secret"],
            "persistentvolumeclaims": ["persistentvolumeclaims", "pvc", "v1", "true",
                                       "PersistentVolumeClaim"],
            "roles": ["roles", "rbac.authorization.k8s.io/v1", "true", "Role"],
            "events": ["events", "ev", "v1", "true", "Event"],
        }
        for name, cells in expect.items():
            self.assertIn(cells, rows.get(name, []), "api-resources row for %s" % name)
        out = self.ok("api-resources", "--namespaced=false", "-o", "name")
        self.assertIn("namespaces", out.split())
        self.assertNotIn("pods", out.split())
        out = self.ok("api-resources", "--api-group=apps", "-o", "name")
        self.assertEqual(sorted(out.split()), ["controllerrevisions.apps", "daemonsets.apps",
                                               "deployments.apps", "replicasets.apps",
                                               "statefulsets.apps"])

    def test_short_names_resolve(self):
        for short in ("po", "svc", "deploy", "cm", "ns", "sa", "rs"):
            rc, out, err = self.kubectl("get", short, "-A")
            self.assertEqual(rc, 0, "get %s: %s" % (short, err))

    def test_api_versions(self):
        out = self.ok("api-versions").split()
        for gv in ("v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1",
                   "coordination.k8s.io/v1", "discovery.k8s.io/v1", "events.k8s.io/v1",
                   "scheduling.k8s.io/v1"):
            self.assertIn(gv, out)

    def test_explain(self):
        """needs: OpenAPI v3."""
        out = self.ok("explain", "pod.spec.containers")
        self.assertRegex(out, r"(?m)^KIND:\s+Pod$")
        self.assertRegex(out, r"(?m)^VERSION:\s+v1$")
        self.assertIn("FIELD: containers <[]Container>", out)
        self.assertRegex(out, r"(?m)^  image\t<string>$")
        self.assertRegex(out, r"(?m)^  name\t<string> -required-$")
        out = self.ok("explain", "deployment.spec.replicas")
        self.assertRegex(out, r"(?m)^GROUP:\s+apps$")
        self.assertIn("FIELD: replicas <integer>", out)

    def test_get_raw_paths(self):
        for path in ("/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/healthz",
                     "/readyz", "/livez"):
            rc, out, err = self.kubectl("get", "--raw", path)
            self.assertEqual(rc, 0, "%s: %s" % (path, err))
        self.assertEqual(self.ok("get", "--raw", "/healthz"), "ok")
        self.assertEqual(json.loads(self.ok("get", "--raw", "/api"))["versions"], ["v1"])


@requires_modern_kubectl
class KubectlTableColumns(ServerTestCase):
    """needs: server-side Table (kubectl shows the server's printer columns)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ns = "tbl-%d" % (os.getpid() % 10000)
        t = cls("test_namespace_columns")
        t.create_json({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cls.ns}})
        t.make_pod(cls.ns, "p1", labels={"app": "x"})
        t.make_deployment(cls.ns, "d1", replicas=2)
        t.create_json({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "s1", "namespace": cls.ns},
                       "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}})

    def test_namespace_columns(self):
        out = self.ok("get", "ns", self.ns)
        self.assertEqual(header(out), ["NAME", "STATUS", "AGE"])
        self.assertEqual(table(out)[1][:2], [self.ns, "Active"])

    def test_pod_columns(self):
        out = self.ok("get", "pods", "-n", self.ns)
        self.assertEqual(header(out), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertEqual(table(out)[1][:4], ["p1", "0/1", "Pending", "0"])

    def test_pod_wide_columns(self):
        out = self.ok("get", "pods", "-n", self.ns, "-o", "wide")
        self.assertEqual(header(out), ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                                       "NOMINATED NODE", "READINESS GATES"])
        self.assertEqual(table(out)[1][:4], ["p1", "0/1", "Pending", "0"])
        self.assertEqual(table(out)[1][-4:], ["<none>", "<none>", "<none>", "<none>"])

    def test_all_namespaces_column(self):
        out = self.ok("get", "pods", "-A")
        self.assertEqual(header(out), ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertIn([self.ns, "p1", "0/1", "Pending", "0"], [r[:5] for r in table(out)])

    def test_deployment_columns(self):
        out = self.ok("get", "deploy", "-n", self.ns)
        self.assertEqual(header(out), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"])
        self.assertEqual(table(out)[1][0], "d1")
        self.assertRegex(table(out)[1][1], r"^\d/2$")

    def test_service_columns(self):
        out = self.ok("get", "svc", "-n", self.ns)
        self.assertEqual(header(out), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"])
        row = table(out)[1]
        self.assertEqual(row[0:2], ["s1", "ClusterIP"])
        self.assertRegex(row[2], r"^10\.43\.")
        self.assertEqual(row[3:5], ["<none>", "80/TCP"])

    def test_configmap_columns(self):
        self.make_configmap(self.ns, "c1", data={"a": "1", "b": "2"})
        out = self.ok("get", "cm", "c1", "-n", self.ns)
        self.assertEqual(header(out), ["NAME", "DATA", "AGE"])
        self.assertEqual(table(out)[1][:2], ["c1", "2"])

    def test_table_raw(self):
        st, hdrs, body = self.server.request(
            "GET", "/api/v1/namespaces/%s/pods?limit=500" % self.ns,
            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("application/json;as=Table;v=v1;g=meta.k8s.io"),
                        hdrs["content-type"])
        t = json.loads(body)
        self.assertEqual((t["kind"], t["apiVersion"]), ("Table", "meta.k8s.io/v1"))
        self.assertEqual(t["columnDefinitions"][0]["name"], "Name")
        self.assertEqual(t["rows"][0]["object"]["kind"], "PartialObjectMetadata")
        self.assertEqual(t["rows"][0]["object"]["metadata"]["namespace"], self.ns)


@requires_modern_kubectl
class KubectlErrors(ServerTestCase):

    def test_bad_yaml(self):
        path = self.server.write("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                 "  name: [unclosed\n")
        out = self.fails("create", "-f", path, "--validate=false")
        self.assertIn('error: error parsing %s: error converting YAML to JSON' % path, out)

    def test_bad_json_body_raw(self):
        st, _, body = self.server.request("POST", "/api/v1/namespaces/default/configmaps",
                                          body=b'{"apiVersion":"v1","kind":"ConfigMap",',
                                          headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        status = json.loads(body)
        self.assertEqual((status["kind"], status["reason"], status["code"]),
                         ("Status", "BadRequest", 400))

    def test_verbs_a_resource_lacks_are_405(self):
        def status_of(method, path, body=None):
            st, _, raw = self.server.request(method, path, body=body)
            return st, json.loads(raw)

        # Namespaces have no deletecollection: nothing is deleted or marked.
        st, status = status_of("DELETE", "/api/v1/namespaces")
        self.assertEqual((st, status["reason"]), (405, "MethodNotAllowed"))
        self.assertEqual(status["message"],
                         "the server does not allow this method on the requested resource")
        ns = self.get_json("ns", "kube-public")
        self.assertEqual(ns["status"]["phase"], "Active")
        self.assertNotIn("deletionTimestamp", ns["metadata"])
        # A status cannot be created, a binding cannot be read.
        self.assertEqual(status_of("POST", "/api/v1/namespaces/default/services/kubernetes/status",
                                   body={"apiVersion": "v1", "kind": "Service"})[0], 405)
        self.assertEqual(status_of("GET", "/api/v1/namespaces/default/pods/p/binding")[0], 405)
        # Subresources not served here are not found, not the object.
        st, status = status_of("GET", "/api/v1/namespaces/default/services/kubernetes/proxy")
        self.assertEqual((st, status["reason"]), (404, "NotFound"))

    def test_cronjob_validation(self):
        ns = self.make_namespace("cj")
        out = self.fails("create", "cronjob", "bad", "--image=busybox:1.36", "--schedule=every day",
                         "-n", ns)
        self.assertIn('error: failed to create cronjob: CronJob.batch "bad" is invalid: '
                      'spec.schedule: Invalid value: "every day"', out)
        cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "always"},
              "spec": {"schedule": "*/5 * * * *", "timeZone": "Mars/Olympus",
                       "jobTemplate": {"spec": {"template": {"spec": {
                           "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}}
        rc, _, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns,
                                  input=json.dumps(cj))
        self.assertEqual(rc, 1)
        self.assertIn("spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone "
                      "Mars/Olympus", err)
        # The pod template gets pod defaults, so its restartPolicy is Always: not for a Job.
        self.assertIn('spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: '
                      '"Always": supported values: "OnFailure", "Never"', err)
        cj["spec"]["schedule"] = "CRON_TZ=UTC */5 * * * *"
        del cj["spec"]["timeZone"]
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Never"
        rc, _, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns,
                                  input=json.dumps(cj))
        self.assertEqual(rc, 1)
        self.assertIn("cannot use TZ or CRON_TZ in schedule, use timeZone field instead", err)
        self.fails("get", "cronjob", "always", "-n", ns)
        out = self.ok("create", "cronjob", "good", "--image=busybox:1.36",
                      "--schedule=*/5 * * * *", "-n", ns)
        self.assertEqual(out.strip(), "cronjob.batch/good created")
        tmpl = self.get_json("cronjob", "good", "-n", ns)["spec"]["jobTemplate"]["spec"]["template"]
        self.assertEqual(tmpl["spec"]["dnsPolicy"], "ClusterFirst")

    def test_deletecollection_by_label(self):
        ns = self.make_namespace("delcoll")
        self.make_configmap(ns, "a", labels={"tier": "web"})
        self.make_configmap(ns, "b", labels={"tier": "web"})
        self.make_configmap(ns, "c", labels={"tier": "db"})
        st, _, body = self.server.request(
            "DELETE", "/api/v1/namespaces/%s/configmaps?labelSelector=tier%%3Dweb" % ns)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.ok("get", "cm", "-n", ns, "-o", "name").split(), ["configmap/c"])

    def test_unknown_field_strict(self):
        """needs: OpenAPI v3 (kubectl's default --validate=strict)."""
        ns = self.make_namespace("strict")
        path = self.server.write("unk.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                 "  name: u\nbogusField: 1\ndata:\n  a: b\n")
        out = self.fails("create", "-f", path, "-n", ns)
        self.assertIn('unknown field "bogusField"', out)
        self.assertIn("Error from server (BadRequest)", out)
        self.fails("get", "cm", "u", "-n", ns)

    def test_unknown_field_raw(self):
        ns = self.make_namespace("strictraw")
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"},
               "data": {"a": "b"}, "spec": {"nested": 1}}
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/configmaps?fieldValidation=Strict" % ns, body=obj)
        self.assertEqual(st, 400, body)
        self.assertIn('unknown field "spec"', json.loads(body)["message"])
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/configmaps?fieldValidation=Ignore" % ns, body=obj)
        self.assertEqual(st, 201, body)
        self.assertNotIn("spec", json.loads(body))
        # nested unknown field in a pod
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolice": "x"}]}}
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/pods?fieldValidation=Strict" % ns, body=pod)
        self.assertEqual(st, 400, body)
        self.assertIn('unknown field "spec.containers[0].imagePullPolice"', json.loads(body)["message"])

    def test_patch_field_validation(self):
        ns = self.make_namespace("patchval")
        self.ok("create", "configmap", "pv", "-n", ns, "--from-literal=a=b")
        path = "/api/v1/namespaces/%s/configmaps/pv" % ns
        kinds = {"merge": "application/merge-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}
        for kind, ct in kinds.items():
            with self.subTest(kind=kind):
                body = json.dumps({"data": {"k": kind}, "bogus%s" % kind: 1})
                # Strict: 400 naming the field, nothing stored.
                st, _, out = self.server.request("PATCH", path + "?fieldValidation=Strict",
                                                 body=body, headers={"Content-Type": ct})
                self.assertEqual(st, 400, out)
                self.assertIn('strict decoding error: unknown field "bogus%s"' % kind,
                              json.loads(out)["message"])
                stored = json.loads(self.ok("get", "cm", "pv", "-n", ns, "-o", "json"))
                self.assertNotEqual(stored["data"].get("k"), kind)
                # Warn (the default): stored without the field, one Warning header.
                st, hdrs, out = self.server.request("PATCH", path, body=body,
                                                    headers={"Content-Type": ct})
                self.assertEqual(st, 200, out)
                self.assertEqual(hdrs.get("warning"), '299 - "unknown field \\"bogus%s\\""' % kind)
                self.assertEqual(json.loads(out)["data"]["k"], kind)
                self.assertNotIn("bogus" + kind, json.loads(out))
                # Ignore: no warning.
                st, hdrs, out = self.server.request("PATCH", path + "?fieldValidation=Ignore",
                                                    body=body, headers={"Content-Type": ct})
                self.assertEqual(st, 200, out)
                self.assertNotIn("warning", hdrs)
        # A duplicate field in a merge patch is a problem like an unknown one.
        dup = '{"data": {"d": "1", "d": "2"}}'
        st, _, out = self.server.request("PATCH", path + "?fieldValidation=Strict", body=dup,
                                         headers={"Content-Type": kinds["merge"]})
        self.assertEqual(st, 400, out)
        self.assertIn('duplicate field "data.d"', json.loads(out)["message"])
        # JSON patch adding an unknown field.
        ops = json.dumps([{"op": "add", "path": "/extra", "value": 1}])
        st, _, out = self.server.request("PATCH", path + "?fieldValidation=Strict", body=ops,
                                         headers={"Content-Type": "application/json-patch+json"})
        self.assertEqual(st, 400, out)
        self.assertIn('unknown field "extra"', json.loads(out)["message"])
        # An unsupported mode is refused.
        st, _, out = self.server.request("PATCH", path + "?fieldValidation=Loose",
                                         body='{"data": {"x": "y"}}',
                                         headers={"Content-Type": kinds["merge"]})
        self.assertEqual(st, 400, out)
        self.assertIn("fieldValidation parameter unsupported: Loose", json.loads(out)["message"])
        # Server-side apply: Strict refuses, Warn warns and applies.
        applied = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pv\ndata:\n  s: t\n"
                   "applyBogus: 1\n")
        apply_ct = {"Content-Type": "application/apply-patch+yaml"}
        st, _, out = self.server.request(
            "PATCH", path + "?fieldManager=t&fieldValidation=Strict", body=applied,
            headers=apply_ct)
        self.assertEqual(st, 400, out)
        self.assertIn('unknown field "applyBogus"', json.loads(out)["message"])
        st, hdrs, out = self.server.request("PATCH", path + "?fieldManager=t", body=applied,
                                            headers=apply_ct)
        self.assertEqual(st, 200, out)
        self.assertEqual(hdrs.get("warning"), '299 - "unknown field \\"applyBogus\\""')
        self.assertEqual(json.loads(out)["data"]["s"], "t")
        # kubectl shows the server's warning.
        rc, _, err = self.kubectl("patch", "cm", "pv", "-n", ns, "--type=merge", "-p",
                                  '{"data": {"w": "1"}, "kubectlBogus": 1}')
        self.assertEqual(rc, 0, err)
        self.assertIn('unknown field "kubectlBogus"', err)

    def test_invalid_name(self):
        ns = self.make_namespace("inv")
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns, input=json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}))
        self.assertEqual(rc, 1)
        self.assertIn('The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: '
                      '"Bad_Name": ' + BAD_NAME_MSG, err)
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/configmaps" % ns,
            body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})
        self.assertEqual(st, 422)
        status = json.loads(body)
        self.assertEqual(status["reason"], "Invalid")
        self.assertEqual(status["details"]["causes"][0]["field"], "metadata.name")
        self.assertEqual(status["details"]["kind"], "ConfigMap")

    def test_invalid_name_generator(self):
        """needs: protobuf request bodies."""
        out = self.fails("create", "configmap", "Bad_Name", "--from-literal=a=b")
        self.assertIn('error: failed to create configmap: ConfigMap "Bad_Name" is invalid: '
                      'metadata.name: Invalid value: "Bad_Name": ' + BAD_NAME_MSG, out)

    def test_invalid_spec(self):
        ns = self.make_namespace("invs")
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns, input=json.dumps(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
                      "template": {"metadata": {"labels": {"app": "b"}},
                                   "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
        self.assertEqual(rc, 1)
        self.assertIn('The Deployment "d" is invalid:', err)
        self.assertIn("spec.replicas: Invalid value: -1: must be greater than or equal to 0", err)
        self.assertIn("spec.template.metadata.labels: Invalid value: ", err)
        self.assertIn("`selector` does not match template `labels`", err)

    def test_duplicate_create(self):
        ns = self.make_namespace("dup")
        self.make_configmap(ns, "twice")
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns, input=json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "twice"}}))
        self.assertEqual(rc, 1)
        self.assertIn('Error from server (AlreadyExists): error when creating "STDIN": configmaps '
                      '"twice" already exists', err)
        st, _, body = self.server.request("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                          body={"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": "twice"}})
        self.assertEqual(st, 409)
        status = json.loads(body)
        self.assertEqual(status["reason"], "AlreadyExists")
        self.assertEqual(status["details"], {"name": "twice", "kind": "configmaps"})

    def test_missing_namespace(self):
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", "no-such-ns",
                                    input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "c"}}))
        self.assertEqual(rc, 1)
        self.assertIn('Error from server (NotFound): error when creating "STDIN": namespaces '
                      '"no-such-ns" not found', err)
        rc, out, err = self.kubectl("get", "cm", "-n", "no-such-ns")
        self.assertEqual(rc, 0, err)  # listing a missing namespace is an empty list, as upstream
        self.assertIn("No resources found in no-such-ns namespace.", err)

    def test_namespace_mismatch(self):
        ns = self.make_namespace("mm")
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/configmaps" % ns,
            body={"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "c", "namespace": "other"}})
        self.assertEqual(st, 400, body)
        self.assertIn("does not match the namespace", json.loads(body)["message"])

    def test_unauthenticated(self):
        st, _, body = self.server.request("GET", "/api/v1/namespaces", cert=False)
        self.assertEqual(st, 401)
        status = json.loads(body)
        self.assertEqual((status["kind"], status["status"], status["reason"], status["code"]),
                         ("Status", "Failure", "Unauthorized", 401))

    def test_untrusted_client_cert(self):
        """A client certificate from a foreign CA is not an identity: like kube-apiserver (which
        requests but does not require client certs in TLS), the server answers 401 Unauthorized."""
        # kubectl with a client certificate from a CA the server does not trust
        d = self.server.work
        key, crt = os.path.join(d, "foreign.key"), os.path.join(d, "foreign.crt")
        p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                            "-days", "1", "-subj", "/O=system:masters/CN=intruder"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        kc = self.server.write("foreign.kubeconfig", """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: %s
    server: https://127.0.0.1:%d
  name: c
contexts:
- context: {cluster: c, user: u}
  name: c
current-context: c
users:
- name: u
  user:
    client-certificate: %s
    client-key: %s
""" % (self.server.ca, self.server.port, crt, key))
        rc, out, err = self.kubectl("get", "ns", kubeconfig=kc,
                                    env={"HOME": os.path.join(self.server.work, "h-foreign")})
        self.assertEqual(rc, 1)
        self.assertIn("error: You must be logged in to the server (Unauthorized)", err)

    def test_wrong_ca_rejected(self):
        kc = self.server.write("badca.kubeconfig", """apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://127.0.0.1:%d
  name: c
contexts:
- context: {cluster: c, user: u}
  name: c
current-context: c
users:
- name: u
  user: {token: whatever}
""" % self.server.port)
        rc, out, err = self.kubectl("get", "ns", "--request-timeout=5s", kubeconfig=kc)
        self.assertEqual(rc, 1)
        self.assertIn("certificate signed by unknown authority", err)

    def test_body_too_large(self):
        ns = self.make_namespace("big")
        big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
               "data": {"blob": "x" * (3 * 1024 * 1024 + 512 * 1024)}}
        st, body = self.server.request_streamed("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                                json.dumps(big).encode())
        self.assertEqual(st, 413, body[:300])
        status = json.loads(body)
        self.assertEqual((status["reason"], status["code"]), ("RequestEntityTooLarge", 413))
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", "-n", ns,
                                    input=json.dumps(big))
        self.assertEqual(rc, 1)
        self.assertIn("Error from server (RequestEntityTooLarge)", err)
        self.fails("get", "cm", "big", "-n", ns)
        # the server is still serving
        self.ok("get", "ns", ns)
        # just under 1 MiB of data is fine
        ok = dict(big, data={"blob": "y" * (1000 * 1024)})
        st, _, body = self.server.request("POST", "/api/v1/namespaces/%s/configmaps" % ns, body=ok)
        self.assertEqual(st, 201, body[:300])

    def test_unsupported_media_type(self):
        st, _, body = self.server.request("POST", "/api/v1/namespaces/default/configmaps",
                                          body=b"a=b", headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 415)
        self.assertEqual(json.loads(body)["reason"], "UnsupportedMediaType")

    def test_unknown_resource(self):
        out = self.fails("get", "frobnicators")
        self.assertIn('error: the server doesn\'t have a resource type "frobnicators"', out)
        st, _, _ = self.server.request("GET", "/api/v1/namespaces/default/frobnicators")
        self.assertEqual(st, 404)


@requires_modern_kubectl
class KubectlTokenAuth(ServerTestCase):
    # tokens: harness.TOKENS (every shared server runs with --token-auth-file)

    def token_kubeconfig(self, token):
        return self.server.write("tok-%s.kubeconfig" % token, """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: %s
    server: https://127.0.0.1:%d
  name: c
contexts:
- context: {cluster: c, user: u}
  name: c
current-context: c
users:
- name: u
  user:
    token: %s
""" % (self.server.ca, self.server.port, token))

    def test_token_kubectl(self):
        kc = self.token_kubeconfig("tok-admin-123")
        rc, out, err = self.kubectl("get", "ns", "-o", "name", kubeconfig=kc)
        self.assertEqual(rc, 0, err)
        self.assertIn("namespace/default", out.split())
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false", kubeconfig=kc,
                                    input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "by-token"}}))
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "configmap/by-token created")

    def test_bad_token_kubectl(self):
        kc = self.token_kubeconfig("tok-wrong")
        rc, out, err = self.kubectl("get", "ns", kubeconfig=kc)
        self.assertEqual(rc, 1)
        self.assertIn("error: You must be logged in to the server (Unauthorized)", err)

    def test_token_raw(self):
        st, _, body = self.server.request("GET", "/api/v1/namespaces", cert=False,
                                          token="tok-admin-123")
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["kind"], "NamespaceList")
        st, _, body = self.server.request("GET", "/api/v1/namespaces", cert=False, token="nope")
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(body)["reason"], "Unauthorized")
        # client certificates still work alongside tokens
        st, _, _ = self.server.request("GET", "/api/v1/namespaces")
        self.assertEqual(st, 200)


@requires_modern_kubectl
class KubectlQuotaAndLimits(ServerTestCase):
    """ResourceQuota and LimitRanger admission. The controller manager does not run here, so the
    tests write the quota status the resource quota controller would have written."""

    def _quota(self, ns, name, hard):
        self.create_json({"apiVersion": "v1", "kind": "ResourceQuota",
                          "metadata": {"name": name, "namespace": ns}, "spec": {"hard": hard}})
        path = "/api/v1/namespaces/%s/resourcequotas/%s" % (ns, name)
        st, _, body = self.server.request("GET", path)
        self.assertEqual(st, 200)
        quota = json.loads(body)
        quota["status"] = {"hard": hard, "used": {k: "0" for k in hard}}
        st, _, body = self.server.request("PUT", path + "/status", quota)
        self.assertEqual(st, 200, body)

    def test_second_pod_exceeds_pod_quota(self):
        """needs: protobuf request bodies (kubectl run)."""
        ns = self.make_namespace("quota")
        self._quota(ns, "q", {"pods": "1"})
        self.ok("run", "one", "--image=busybox:1.36", "-n", ns)
        out = self.fails("run", "two", "--image=busybox:1.36", "-n", ns)
        self.assertIn('Error from server (Forbidden): pods "two" is forbidden: exceeded quota: q, '
                      'requested: pods=1, used: pods=1, limited: pods=1', out)
        self.fails("get", "pod", "two", "-n", ns)
        self.assertEqual(self.get_json("quota", "q", "-n", ns)["status"]["used"], {"pods": "1"})

        # The same refusal over the API: 403 with a Forbidden status naming the pod.
        st, _, body = self.server.request(
            "POST", "/api/v1/namespaces/%s/pods" % ns,
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "three"},
             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
        self.assertEqual(st, 403)
        status = json.loads(body)
        self.assertEqual(status["reason"], "Forbidden")
        self.assertEqual(status["details"], {"name": "three", "kind": "pods"})

    def test_limit_range_defaults_and_maximum(self):
        ns = self.make_namespace("limits")
        self.create_json({"apiVersion": "v1", "kind": "LimitRange",
                          "metadata": {"name": "lr", "namespace": ns},
                          "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"},
                                               "defaultRequest": {"cpu": "100m"}}]}})
        # Upstream's LimitRange defaults: the default limit is the maximum.
        lr = self.get_json("limitrange", "lr", "-n", ns)
        self.assertEqual(lr["spec"]["limits"][0]["default"], {"cpu": "1"})

        self.make_pod(ns, "small")
        pod = self.get_json("pod", "small", "-n", ns)
        self.assertEqual(pod["spec"]["containers"][0]["resources"],
                         {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}})
        self.assertEqual(pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
                         "LimitRanger plugin set: cpu request for container main; "
                         "cpu limit for container main")

        big = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big", "namespace": ns},
               "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                                        "resources": {"limits": {"cpu": "2"}}}]}}
        rc, out, err = self.kubectl("create", "-f", "-", "--validate=false",
                                    input=json.dumps(big))
        self.assertEqual(rc, 1, out + err)
        self.assertIn('Error from server (Forbidden): error when creating "STDIN": pods "big" is '
                      'forbidden: maximum cpu usage per Container is 1, but limit is 2', err)


class KubectlSmoke(ServerTestCase):
    """The minimal subset that also runs with Debian's kubectl 1.20 on a plain Debian machine."""

    def setUp(self):
        super().setUp()
        if harness.KUBECTL_MODE is None:
            self.skipTest("no kubectl installed")

    def test_smoke(self):
        self.assertIn("Server Version", self.ok("version"))
        self.assertIn("namespace/default", self.ok("get", "ns", "-o", "name").split())
        ns = self.make_namespace("smoke")
        self.make_configmap(ns, "c", data={"a": "b"})
        self.assertEqual(self.get_json("cm", "c", "-n", ns)["data"], {"a": "b"})
        self.assertEqual(self.ok("delete", "cm", "c", "-n", ns).strip(), 'configmap "c" deleted')
        self.fails("get", "cm", "c", "-n", ns)


if __name__ == "__main__":
    unittest.main()
