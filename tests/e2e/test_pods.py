"""Pods as real containers: `skiff server` with its node agent (containerd through CRI, CNI
bridge networking) inside a network namespace, driven by the real kubectl."""

import http.client
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
import unittest
import urllib.parse

import harness
import node


@harness.requires_modern_kubectl
class PodsTest(node.NodeTestCase):

    def test_node_registers_with_machine_facts(self):
        n = self.get_json("node", node.NODE_NAME)
        info = n["status"]["nodeInfo"]
        self.assertTrue(info["containerRuntimeVersion"].startswith("containerd://"))
        self.assertEqual(info["operatingSystem"], "linux")
        addresses = {a["type"]: a["address"] for a in n["status"]["addresses"]}
        self.assertEqual(addresses["InternalIP"], node.NODE_IP)
        self.assertEqual(n["status"]["capacity"]["pods"], "110")
        self.assertEqual(n["spec"]["podCIDR"], "10.42.0.0/24")
        # With crun installed (install-deps does), the runc shim runs it through skiff-crun.
        if os.path.exists("/usr/bin/crun"):
            with open(os.path.join(os.path.dirname(self.socket), "config.toml")) as f:
                self.assertIn("BinaryName = \"%s\"" % os.path.join(
                    os.path.dirname(harness.SKIFF_BIN), "skiff-crun"), f.read())
        lease = self.get_json("lease", node.NODE_NAME, "-n", "kube-node-lease")
        self.assertEqual(lease["spec"]["holderIdentity"], node.NODE_NAME)

    def test_agent_runs_the_service_proxy(self):
        # The in-process proxy writes the node's rules: the `kubernetes` Service is among them.
        svc = self.get_json("service", "kubernetes")
        element = "%s . tcp . 443 : goto pick-" % svc["spec"]["clusterIP"]
        self.wait_for(lambda: element in subprocess.run(
            ["nft", "list", "map", "ip", "skiff-proxy", "service-ips"], capture_output=True,
            text=True, timeout=30).stdout, what="the kubernetes Service in the proxy's map")

    def test_pod_traffic_leaving_the_node_is_masqueraded(self):
        # A network beyond the node's: a namespace of this test's own, on a veth from the node.
        table = subprocess.run(["nft", "list", "table", "inet", "skiff-pod-masquerade"],
                               capture_output=True, text=True, timeout=30)
        self.assertIn("ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/24", table.stdout)
        outside = "skiff-e2e-out-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", outside], check=True, timeout=30)
        listener = None
        try:
            for cmd in (["link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns",
                         outside],
                        ["addr", "add", "172.31.251.1/24", "dev", "up0"],
                        ["link", "set", "up0", "up"],
                        ["-n", outside, "addr", "add", "172.31.251.2/24", "dev", "out0"],
                        ["-n", outside, "link", "set", "out0", "up"]):
                subprocess.run(["ip"] + cmd, check=True, timeout=30)
            # Without masquerading the listener sees the pod's address, to which it has no
            # route, so the connection never completes.
            listener = subprocess.Popen(
                ["nsenter", "--net=/var/run/netns/" + outside, "python3", "-c",
                 "import socket\n"
                 "s = socket.socket(); s.bind(('172.31.251.2', 0)); s.listen(1)\n"
                 "print(s.getsockname()[1], flush=True)\n"
                 "c, peer = s.accept(); c.sendall(b'hello from outside\\n'); print(peer[0])\n"],
                stdout=subprocess.PIPE, text=True)
            port = listener.stdout.readline().strip()
            name = self.uniq("egress")
            self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent",
                    "--restart=Never", "--", "sh", "-c", "nc 172.31.251.2 %s" % port)
            self.wait_for(lambda: self.phase(name) in ("Succeeded", "Failed"), what="nc done")
            self.assertEqual(listener.wait(timeout=30), 0)
            self.assertEqual(listener.stdout.readline().strip(), "172.31.251.1")
            self.assertIn("hello from outside", self.ok("logs", name))
            self.ok("delete", "pod", name)
        finally:
            if listener is not None and listener.poll() is None:
                listener.kill()
                listener.wait()
            subprocess.run(["ip", "netns", "del", outside], capture_output=True, timeout=30)

    def test_image_import_into_the_running_node(self):
        # The built-in busybox archive under a name the node does not have yet.
        name = self.uniq("imported")
        ref = "skiff.test/%s:v1" % name
        src = os.path.join(os.path.dirname(harness.SKIFF_BIN), "images", "busybox.tar")
        tmp = tempfile.mkdtemp(prefix="skiff-e2e-import-")
        try:
            archive = os.path.join(tmp, "image.tar")
            with tarfile.open(src) as tin, tarfile.open(archive, "w") as tout:
                for member in tin.getmembers():
                    data = tin.extractfile(member).read() if member.isfile() else None
                    if member.name == "index.json":
                        index = json.loads(data)
                        index["manifests"][0]["annotations"][
                            "org.opencontainers.image.ref.name"] = ref
                        data = json.dumps(index).encode()
                        member.size = len(data)
                    tout.addfile(member, io.BytesIO(data) if data is not None else None)
            # Never: the pod runs only from what the import brought in.
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"restartPolicy": "Never", "containers": [{
                       "name": "main", "image": ref, "imagePullPolicy": "Never",
                       "command": ["sh", "-c", "echo from the imported image"]}]}}
            before = self.uniq("before")
            pod["metadata"]["name"] = before
            self.ok("create", "-f", "-", input=json.dumps(pod))
            def waiting_reason():
                statuses = json.loads(self.ok("get", "pod", before, "-o", "json")).get(
                    "status", {}).get("containerStatuses", [])
                return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
            self.wait_for(lambda: waiting_reason() == "ErrImageNeverPull",
                          what="ErrImageNeverPull before the import")
            bad = subprocess.run([harness.SKIFF_BIN, "image", "import", "--data-dir",
                                  self.server.data_dir, os.path.join(tmp, "missing.tar")],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(bad.returncode, 1)
            self.assertIn("no such file", bad.stderr)
            done = subprocess.run([harness.SKIFF_BIN, "image", "import", "--data-dir",
                                   self.server.data_dir, archive],
                                  capture_output=True, text=True, timeout=300)
            self.assertEqual(done.returncode, 0, done.stderr)
            pod["metadata"]["name"] = name
            self.ok("create", "-f", "-", input=json.dumps(pod))
            self.wait_for(lambda: self.phase(name) == "Succeeded", what="Succeeded")
            self.assertEqual(self.ok("logs", name), "from the imported image\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_run_to_completion_and_failure(self):
        name = self.uniq("done")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent",
                "--restart=Never", "--", "sh", "-c", "echo hi; exit 0")
        self.wait_for(lambda: self.phase(name) == "Succeeded", what="Succeeded")
        out = self.ok("get", "pod", name)
        self.assertIn("Completed", out)
        st = self.container_status(name)
        self.assertEqual(st["state"]["terminated"]["exitCode"], 0)
        self.assertTrue(st["containerID"].startswith("containerd://"))
        p = self.pod(name)
        self.assertTrue(p["status"]["podIP"].startswith("10.42.0."))
        self.assertEqual(p["status"]["hostIP"], node.NODE_IP)

        bad = self.uniq("fail")
        self.ok("run", bad, "--image=busybox", "--image-pull-policy=IfNotPresent",
                "--restart=Never", "--", "sh", "-c", "exit 3")
        self.wait_for(lambda: self.phase(bad) == "Failed", what="Failed")
        st = self.container_status(bad)
        self.assertEqual(st["state"]["terminated"]["exitCode"], 3)
        self.assertEqual(st["state"]["terminated"]["reason"], "Error")
        self.ok("delete", "pod", name, bad)

    def test_crash_loop_backs_off(self):
        name = self.uniq("crash")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "exit 1")
        self.wait_for(lambda: "CrashLoopBackOff" in self.ok("get", "pod", name), timeout=60,
                      what="CrashLoopBackOff")
        st = self.container_status(name)
        self.assertGreaterEqual(st["restartCount"], 1)
        self.assertEqual(st["lastState"]["terminated"]["exitCode"], 1)
        self.assertEqual(self.phase(name), "Running")
        self.ok("delete", "pod", name, "--grace-period=1")

    def test_deployment_rolls_out_and_scales(self):
        name = self.uniq("web")
        self.ok("create", "deployment", name, "--image=busybox", "--replicas=2", "--",
                "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
        # image busybox:latest defaults to Always: the pull must work offline.
        self.ok("rollout", "status", "deployment/" + name, "--timeout=90s", timeout=100)
        pods = self.get_json("pods", "-l", "app=" + name)["items"]
        self.assertEqual(len(pods), 2)
        ips = {p["status"]["podIP"] for p in pods}
        self.assertEqual(len(ips), 2)
        for p in pods:
            self.assertEqual(p["status"]["phase"], "Running")
            self.assertTrue(p["status"]["containerStatuses"][0]["ready"])
        self.ok("scale", "deployment", name, "--replicas=1")
        self.wait_for(lambda: len(self.get_json("pods", "-l", "app=" + name)["items"]) == 1,
                      what="scale down")
        self.ok("delete", "deployment", name)

    def test_config_map_and_secret_as_files_and_env(self):
        name = self.uniq("cfg")
        self.ok("create", "configmap", name, "--from-literal=greeting=hello")
        self.ok("create", "secret", "generic", name, "--from-literal=password=s3cret")
        check = ('test "$(cat /etc/cfg/greeting)" = hello && '
                 'test "$(cat /etc/sec/password)" = s3cret && '
                 'test "$GREETING" = hello && test "$PASSWORD" = s3cret && '
                 'test "$POD_NAME" = "%s" && grep -q "%s" /etc/hosts' % (name, name))
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", check],
                    "env": [
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": name, "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"},
                                     {"name": "sec", "mountPath": "/etc/sec"}]}],
                "volumes": [{"name": "cfg", "configMap": {"name": name}},
                            {"name": "sec", "secret": {"secretName": name}}]}}
        self.create_json(pod)
        self.wait_for(lambda: self.phase(name) in ("Succeeded", "Failed"), what="pod end")
        self.assertEqual(self.phase(name), "Succeeded", json.dumps(self.container_status(name)))
        self.ok("delete", "pod", name)

    def test_missing_config_map_is_reported(self):
        name = self.uniq("nocfg")
        self.create_json({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{
                "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "30"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent-" + name,
                                                                      "key": "k"}}}]}]}})
        self.wait_for(lambda: "CreateContainerConfigError" in self.ok("get", "pod", name),
                      what="CreateContainerConfigError")
        self.ok("delete", "pod", name, "--grace-period=0", "--force")

    def test_job_completes(self):
        name = self.uniq("job")
        self.ok("create", "job", name, "--image=busybox", "--", "sh", "-c", "echo working; sleep 1")
        self.ok("wait", "--for=condition=complete", "job/" + name, "--timeout=90s", timeout=100)
        self.ok("delete", "job", name)

    def test_graceful_termination(self):
        polite = self.uniq("polite")
        stubborn = self.uniq("stubborn")
        self.ok("run", polite, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done")
        self.ok("run", stubborn, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "trap '' TERM; while true; do sleep 0.2; done")
        for n in (polite, stubborn):
            self.wait_for(lambda n=n: self.phase(n) == "Running", what=n + " Running")
        t0 = time.time()
        self.ok("delete", "pod", polite, "--grace-period=30", timeout=60)
        self.assertLess(time.time() - t0, 15)  # it stopped on SIGTERM, long before the grace
        t0 = time.time()
        self.ok("delete", "pod", stubborn, "--grace-period=3", timeout=60)
        took = time.time() - t0
        self.assertGreaterEqual(took, 2.5)  # SIGTERM ignored: killed after the grace period
        self.assertLess(took, 20)

    def test_restarted_agent_adopts_running_pods(self):
        name = self.uniq("adopt")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
        self.wait_for(lambda: self.phase(name) == "Running", what="Running")
        before = self.container_status(name)["containerID"]
        self.server.restart(timeout=60)
        self.wait_node_ready()
        time.sleep(3)  # a few sync rounds of the new kubelet
        st = self.container_status(name)
        self.assertEqual(st["containerID"], before)
        self.assertEqual(st["restartCount"], 0)
        self.assertEqual(self.phase(name), "Running")
        self.ok("delete", "pod", name)

    def test_deleted_pods_leave_nothing_behind(self):
        name = self.uniq("clean")
        shims_before = len(node._pids_using(self.socket))
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
        self.wait_for(lambda: self.phase(name) == "Running", what="Running")
        self.assertGreater(len(node._pids_using(self.socket)), shims_before)
        uid = self.pod(name)["metadata"]["uid"]
        pod_dir = os.path.join(self.server.data_dir, "agent", "pods", uid)
        self.assertTrue(os.path.isdir(pod_dir))
        self.assertTrue(any(uid in d for d in node._cgroup_dirs(self.cgroup_root)))
        self.ok("delete", "pod", name)
        self.wait_for(lambda: not os.path.exists(pod_dir), what="pod dir removed")
        self.wait_for(lambda: not any(uid in d for d in node._cgroup_dirs(self.cgroup_root)),
                      what="pod cgroups removed")
        # The pod's shim is gone with its sandbox.
        self.wait_for(lambda: len(node._pids_using(self.socket)) <= shims_before,
                      what="shim gone")
    def test_logs(self):
        name = self.uniq("logs")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent",
                "--restart=Never", "--", "sh", "-c", "echo one; echo two; echo three; echo oops >&2")
        self.wait_for(lambda: self.phase(name) == "Succeeded", what="Succeeded")
        # stdout and stderr are separate pipes: only lines of one stream keep their order.
        out = self.ok("logs", name)
        self.assertEqual(sorted(out.splitlines()), ["one", "oops", "three", "two"])
        self.assertEqual([l for l in out.splitlines() if l != "oops"], ["one", "two", "three"])
        self.assertEqual(len(self.ok("logs", name, "--tail=1").splitlines()), 1)
        stamped = self.ok("logs", name, "--timestamps").splitlines()
        self.assertEqual(len(stamped), 4)
        for line in stamped:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (one|two|three|oops)$")
        rc, _, err = self.kubectl("logs", name, "-c", "nope")
        self.assertNotEqual(rc, 0)
        self.assertIn("container nope is not valid for pod " + name, err)
        self.ok("delete", "pod", name)

    def test_logs_follow_and_previous(self):
        name = self.uniq("follow")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent",
                "--restart=Never", "--", "sh", "-c",
                "for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done")
        self.wait_for(lambda: self.phase(name) in ("Running", "Succeeded"), what="started")
        out = self.ok("logs", "-f", name, timeout=60)
        self.assertEqual(out, "".join("line %d\n" % i for i in range(1, 6)))
        crash = self.uniq("prev")
        self.ok("run", crash, "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
                "sh", "-c", "echo run at $(date +%s%N); exit 1")
        self.wait_for(lambda: (self.container_status(crash).get("restartCount") or 0) >= 1,
                      what="a restart")
        previous = self.ok("logs", crash, "--previous")
        self.assertTrue(previous.startswith("run at "), previous)
        self.ok("delete", "pod", name, crash, "--grace-period=1")

    def test_readiness_gates_a_rollout(self):
        name = self.uniq("ready")
        self.create_json({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 2,
                         "containers": [{
                             "name": "main", "image": "busybox",
                             "imagePullPolicy": "IfNotPresent",
                             "command": ["sh", "-c", "sleep 3; touch /tmp/ready; "
                                         "trap 'exit 0' TERM; while true; do sleep 1; done"],
                             "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                                                "periodSeconds": 1}}]}}}})
        t0 = time.time()
        self.wait_for(lambda: len(self.get_json("pods", "-l", "app=" + name)["items"]) == 2 and all(
            p["status"].get("phase") == "Running"
            for p in self.get_json("pods", "-l", "app=" + name)["items"]), what="Running")
        # Running but not Ready until the probe passes.
        pods = self.get_json("pods", "-l", "app=" + name)["items"]
        if time.time() - t0 < 2.5:
            self.assertFalse(any(p["status"]["containerStatuses"][0]["ready"] for p in pods))
        self.ok("rollout", "status", "deployment/" + name, "--timeout=60s", timeout=70)
        for p in self.get_json("pods", "-l", "app=" + name)["items"]:
            ready = [c for c in p["status"]["conditions"] if c["type"] == "Ready"][0]
            self.assertEqual(ready["status"], "True")
        self.ok("delete", "deployment", name)

    def test_liveness_failure_restarts_the_container(self):
        name = self.uniq("live")
        self.create_json({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "sleep 2; touch /tmp/dead; while true; do sleep 1; done"],
                "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -e /tmp/dead"]},
                                  "periodSeconds": 1, "failureThreshold": 1}}]}})
        self.wait_for(lambda: (self.container_status(name).get("restartCount") or 0) >= 1,
                      timeout=60, what="a liveness restart")
        events = self.ok("get", "events", "--field-selector", "involvedObject.name=" + name)
        self.assertIn("Liveness probe failed", events)
        self.ok("delete", "pod", name, "--grace-period=1")

    def test_static_pod_from_the_manifest_directory(self):
        manifests = os.path.join(self.server.data_dir, "agent", "manifests")
        path = os.path.join(manifests, "static-web.yaml")
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\nspec:\n"
                    "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n"
                    "    image: busybox\n    command: [sh, -c, 'echo static; sleep 3600']\n")
        mirror = "static-web-" + node.NODE_NAME
        try:
            self.wait_for(lambda: self.phase(mirror) == "Running", timeout=60, what="mirror Running")
            p = self.pod(mirror)
            self.assertIn("kubernetes.io/config.mirror", p["metadata"]["annotations"])
            self.assertEqual(self.ok("logs", mirror), "static\n")
            # Deleting the mirror pod does not stop the static pod: the mirror comes back.
            container = self.container_status(mirror)["containerID"]
            self.ok("delete", "pod", mirror)
            self.wait_for(lambda: self.pod(mirror) is not None and
                          self.pod(mirror)["metadata"]["uid"] != p["metadata"]["uid"],
                          what="mirror recreated")
            self.wait_for(lambda: self.container_status(mirror).get("containerID") == container,
                          what="same container")
        finally:
            os.remove(path)
        self.wait_for(lambda: self.pod(mirror) is None, timeout=60, what="mirror removed")

    def test_exec_attach_and_port_forward(self):
        name = self.uniq("exec")
        self.ok("run", name, "--image=busybox", "--image-pull-policy=IfNotPresent",
                "--restart=Never", "--", "sh", "-c",
                "mkdir /www && echo served > /www/index.html && httpd -p 8080 -h /www && "
                "while true; do echo tick; sleep 0.3; done")
        self.wait_for(lambda: self.phase(name) == "Running", what="Running")

        def kubelet_log():
            with open(self.server.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()

        def translated(run, kind, protocol, target="/" + name):
            """Runs `run` and returns what it returned, checking that the kubelet translated
            exactly one session of `kind` from WebSocket `protocol` (kubectl then never fell back
            to SPDY: it does so only when refused, and a refusal is never logged as translated),
            or none when protocol is None, and refused none."""
            before = len(kubelet_log())
            result = run()
            # The session's lines may follow the client's end by a moment.
            want = "kubelet: %s default/%s%s: WebSocket %s translated to SPDY/3.1" % (
                kind, name, target if kind != "portforward" else "", protocol)
            deadline = time.time() + 10
            while True:
                new = kubelet_log()[before:]
                hits = [l for l in new if " translated to SPDY/3.1 " in l]
                if protocol is None or hits or time.time() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual([l for l in new if "passed on" in l], [])
            if protocol is None:
                self.assertEqual(hits, [])
            else:
                self.assertEqual(len(hits), 1, new)
                self.assertIn(want, hits[0])
            return result

        # kubectl 1.32 speaks WebSocket v5.channel.k8s.io, which containerd's streaming server
        # does not: the kubelet translates it to SPDY. 1.27 speaks SPDY, which goes to the
        # runtime as it is.
        for version, protocol in ((None, "v5.channel.k8s.io"), ("1.27", None)):
            rc, out, err = translated(lambda: self.kubectl(
                "exec", name, "--", "sh", "-c", "echo out; echo err >&2", version=version),
                "exec", protocol)
            self.assertEqual((rc, out, err), (0, "out\n", "err\n"), version)
            rc, out, err = translated(lambda: self.kubectl(
                "exec", name, "--", "sh", "-c", "exit 3", version=version), "exec", protocol)
            self.assertEqual(rc, 3, err)
            self.assertIn("command terminated with exit code 3", err)
            # stdin to its end (v5: the close of channel 0; SPDY: the stdin stream's FIN).
            rc, out, err = translated(lambda: self.kubectl(
                "exec", "-i", name, "--", "tr", "a-z", "A-Z", input="hello\n", version=version),
                "exec", protocol)
            self.assertEqual((rc, out), (0, "HELLO\n"), err)
            rc, out, err = translated(lambda: self.kubectl(
                "exec", "-i", name, "--", "sh", "-c", "wc -c; exit 4", input="x" * 100000,
                version=version), "exec", protocol)
            self.assertEqual((rc, out.strip()), (4, "100000"), err)
        # kubectl's own account (-v=7 logs every request): v5 agreed, no fallback to SPDY (which
        # it would log, then POST the request again).
        rc, out, err = self.kubectl("exec", name, "-v=7", "--", "echo", "v7")
        self.assertEqual((rc, out), (0, "v7\n"), err)
        self.assertIn("The subprotocol is v5.channel.k8s.io", err)
        self.assertNotIn("fallback", err)
        self.assertNotIn("POST https://", err)
        # A filter over an input larger than the connections buffer: its output flows while its
        # input waits.
        big = "abcdefghij" * 800000
        rc, out, err = translated(lambda: self.kubectl(
            "exec", "-i", name, "--", "tr", "a-j", "A-J", input=big, timeout=120),
            "exec", "v5.channel.k8s.io")
        self.assertEqual((rc, len(out)), (0, len(big)), err)
        self.assertTrue(out == big.upper())

        # The official Python client execs over WebSocket v4.channel.k8s.io, which containerd's
        # streaming server speaks itself.
        from kubernetes import config as kube_config
        from kubernetes.client import CoreV1Api
        from kubernetes.stream import stream
        api = CoreV1Api(kube_config.new_client_from_config(config_file=self.server.kubeconfig))
        out = translated(lambda: stream(
            api.connect_get_namespaced_pod_exec, name, "default",
            command=["sh", "-c", "echo from python"], stdout=True, stderr=True, stdin=False,
            tty=False), "exec", None)
        self.assertEqual(out, "from python\n")
        rc, _, err = self.kubectl("exec", name, "-c", "nope", "--", "true")
        self.assertNotEqual(rc, 0)
        self.assertIn("container nope is not valid for pod " + name, err)
        rc, _, err = self.kubectl("exec", "missing-pod", "--", "true")
        self.assertNotEqual(rc, 0)
        self.assertIn('pods "missing-pod" not found', err)

        # A tty with a resize: kubectl needs a terminal for -t, so a raw v5 client plays it.
        messages = translated(lambda: self._v5_exec(
            name, ["sh", "-c", "read line; stty size; echo \"got $line\""], tty=True,
            send=[(4, b'{"Width":100,"Height":40}'), (None, 0.3), (0, b"hello\n")]),
            "exec", "v5.channel.k8s.io")
        output = b"".join(data for channel, data in messages if channel == 1)
        self.assertIn(b"40 100\r\n", output)
        self.assertIn(b"got hello\r\n", output)
        self.assertNotIn(2, [channel for channel, _ in messages])  # a tty has no stderr
        self.assertEqual(messages[-2], (3, b'{"metadata":{},"status":"Success"}'))
        self.assertEqual(messages[-1], ("close", 1000))

        # The kubelet's own /run (10250, the cluster CA's client certificates): the command's
        # output, or 500 with upstream's message when it fails.
        tls = os.path.join(self.server.data_dir, "tls")
        ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.crt"))
        ctx.check_hostname = False
        ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))
        for cmd, want in (("cat%20/www/index.html", (200, b"served\n")),
                          ("cat%20/nope", (500, b"command 'cat /nope' exited with 1: cat: "
                                                b"can't open '/nope': No such file or directory\n"))):
            conn = http.client.HTTPSConnection("127.0.0.1", 10250, context=ctx, timeout=30)
            try:
                conn.request("POST", "/run/default/%s/%s?cmd=%s" % (name, name, cmd))
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), want)
            finally:
                conn.close()

        # attach: the running container's output, over WebSocket v5 (1.32) and SPDY (1.27).
        for version, protocol in ((None, "v5.channel.k8s.io"), ("1.27", None)):
            def attach_once():
                attach = self.server.kubectl_popen("attach", name, version=version)
                try:
                    return attach.stdout.readline()
                finally:
                    attach.kill()
                    attach.communicate(timeout=30)
            self.assertEqual(translated(attach_once, "attach", protocol), "tick\n", version)

        # port-forward: 1.32 tunnels SPDY through WebSocket (the kubelet unwraps it), 1.30 speaks
        # SPDY.
        for version, protocol in ((None, "SPDY/3.1+portforward.k8s.io"), ("1.30", None)):
            def forward_twice():
                forward = self.server.kubectl_popen("port-forward", "pod/" + name, ":8080",
                                                    version=version)
                try:
                    line = forward.stdout.readline()
                    self.assertRegex(line, r"^Forwarding from 127\.0\.0\.1:\d+ -> 8080$", version)
                    local = int(line.split(":")[1].split()[0])
                    bodies = []
                    for _ in range(2):  # two connections through one forward
                        bodies.append(subprocess.run(
                            ["busybox", "wget", "-q", "-O", "-",
                             "http://127.0.0.1:%d/index.html" % local],
                            capture_output=True, text=True, timeout=30).stdout)
                    return bodies
                finally:
                    forward.kill()
                    forward.communicate(timeout=30)
            self.assertEqual(translated(forward_twice, "portforward", protocol),
                             ["served\n"] * 2, version)
        self.ok("delete", "pod", name, "--grace-period=1")

    def _v5_exec(self, pod, command, tty=False, send=()):
        """Execs over WebSocket v5.channel.k8s.io through the API server with a raw client.
        `send`: (channel, bytes) messages, in order ((None, seconds) waits). Returns what came
        back: (channel, bytes) for each message, then ("close", code)."""
        import base64
        import socket
        import struct
        tls = os.path.join(self.server.data_dir, "tls")
        ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.crt"))
        ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))
        query = "&".join(["command=" + urllib.parse.quote(c, safe="") for c in command] +
                         ["stdin=true", "stdout=true"] +
                         (["tty=true"] if tty else ["stderr=true"]))
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.server.port),
                                                        timeout=30),
                               server_hostname="127.0.0.1")
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(("GET /api/v1/namespaces/default/pods/%s/exec?%s HTTP/1.1\r\n"
                          "Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
                          % (pod, query, key)).encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                self.assertTrue(chunk, buf)
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
            self.assertIn(b"\r\nSec-WebSocket-Protocol: v5.channel.k8s.io", head)
            for channel, data in send:
                if channel is None:
                    time.sleep(data)
                    continue
                payload = bytes([channel]) + data
                mask = os.urandom(4)
                frame = bytes([0x82, 0x80 | len(payload)]) if len(payload) < 126 else \
                    bytes([0x82, 0x80 | 126]) + struct.pack(">H", len(payload))
                sock.sendall(frame + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            got = []
            while True:
                while True:  # one whole frame in buf
                    if len(buf) >= 2:
                        size, at = buf[1] & 0x7F, 2
                        if size == 126 and len(buf) >= 4:
                            size, at = struct.unpack(">H", buf[2:4])[0], 4
                        elif size == 127 and len(buf) >= 10:
                            size, at = struct.unpack(">Q", buf[2:10])[0], 10
                        if size < 126 or at > 2:
                            if len(buf) >= at + size:
                                break
                    chunk = sock.recv(65536)
                    self.assertTrue(chunk, "the connection ended without a close frame: %r" % got)
                    buf += chunk
                opcode, payload, buf = buf[0] & 0x0F, buf[at:at + size], buf[at + size:]
                if opcode == 0x8:
                    got.append(("close", struct.unpack(">H", payload[:2])[0]))
                    return got
                if opcode == 0x2 and payload:
                    got.append((payload[0], payload[1:]))
        finally:
            sock.close()


if __name__ == "__main__":
    unittest.main()
