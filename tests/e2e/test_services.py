"""Services through the proxy: a node (server + agent, in a network namespace of the test's own)
with the Service proxy run as its own `skiff proxy` process, so the tests can restart it and
clean up after it. Clients are the node itself (this process, inside the namespace) and pods."""

import json
import os
import random
import socket
import struct
import subprocess
import time
import urllib.request

import harness
import node

HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
ECHO = "exec nc -ll -p 7000 -e cat"


def http_get(ip, port, path="/", timeout=2):
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (ip, port, path), timeout=timeout) as r:
            return r.read().decode().strip()
    except OSError:
        return None


DNS_IP = "10.43.0.10"
CLIENT_IP = "172.31.250.2"  # a client outside the node, on the node's network
EXTERNAL_IP = "192.0.2.50"  # an external IP of a Service, routed by the client to the node


def dns_query(name, qtype=1, server=DNS_IP, timeout=2):
    """One question over UDP. Returns (rcode, [(type, data)]) where data is an address for A
    and (priority, weight, port, target) for SRV; None when nothing answers."""
    qid = random.randint(0, 0xFFFF)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(packet, (server, 53))
        reply, _ = s.recvfrom(4096)
    except OSError:
        return None
    finally:
        s.close()
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", reply[:12])
    if rid != qid:
        return None

    def skip_name(pos):
        while True:
            n = reply[pos]
            if n & 0xC0 == 0xC0:
                return pos + 2
            if n == 0:
                return pos + 1
            pos += n + 1

    def read_name(pos):
        labels = []
        while True:
            n = reply[pos]
            if n & 0xC0 == 0xC0:
                pos = ((n & 0x3F) << 8) | reply[pos + 1]
                continue
            if n == 0:
                return ".".join(labels)
            labels.append(reply[pos + 1:pos + 1 + n].decode())
            pos += n + 1

    pos = 12
    for _ in range(qd):
        pos = skip_name(pos) + 4
    answers = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", reply[pos:pos + 10])
        pos += 10
        rdata = reply[pos:pos + length]
        if rtype == 1:
            answers.append((1, socket.inet_ntoa(rdata)))
        elif rtype == 33:
            prio, weight, port = struct.unpack(">HHH", rdata[:6])
            answers.append((33, (prio, weight, port, read_name(pos + 6))))
        else:
            answers.append((rtype, rdata))
        pos += length
    return flags & 0xF, answers


def iptables_save():
    out = ""
    for table in ("nat", "filter"):
        out += subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True,
                              timeout=30).stdout
    return out


def nft_ruleset():
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                          timeout=30).stdout


@harness.requires_modern_kubectl
class ServicesTest(node.NodeTestCase):

    SERVER_ARGS = ("--disable-proxy",)
    PROXY_ARGS = ()
    proxy = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.start_proxy()
        except BaseException:
            cls.tear_down_node()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stop_proxy()
        super().tearDownClass()

    @classmethod
    def start_proxy(cls):
        cls.proxy_log = open(os.path.join(cls.server.dir, "proxy.log"), "ab")
        cls.proxy = subprocess.Popen(
            [harness.SKIFF_BIN, "proxy", "--kubeconfig", cls.server.kubeconfig,
             "--hostname-override", node.NODE_NAME, "--proxy-sync-period", "5s"] +
            list(cls.PROXY_ARGS),
            stdout=cls.proxy_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # The rules appear with the first sync.
        deadline = time.time() + 30
        while time.time() < deadline:
            if cls.proxy_rules_present():
                return
            time.sleep(0.2)
        raise RuntimeError("the proxy never wrote its rules")

    @classmethod
    def proxy_rules_present(cls):
        return "table ip skiff-proxy" in nft_ruleset()

    @classmethod
    def stop_proxy(cls):
        if cls.proxy is not None:
            cls.proxy.terminate()
            try:
                cls.proxy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                cls.proxy.kill()
                cls.proxy.wait()
            cls.proxy = None
            cls.proxy_log.close()

    # ---- fixtures ----------------------------------------------------------------------------

    def deployment(self, ns, name, replicas, command, ports, readiness=None, volumes=None):
        container = {"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", command], "ports": ports}
        if readiness:
            container["readinessProbe"] = readiness
        spec = {"containers": [container], "terminationGracePeriodSeconds": 1}
        if volumes:
            container["volumeMounts"] = [{"name": v["name"], "mountPath": "/" + v["name"]}
                                         for v in volumes]
            spec["volumes"] = volumes
        self.create_json({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})
        self.ok("rollout", "status", "-n", ns, "deployment/" + name, "--timeout=120s",
                timeout=130)
        return sorted(p["metadata"]["name"] for p in
                      self.get_json("pods", "-n", ns, "-l", "app=" + name)["items"])

    def service(self, ns, name, ports, selector=None, **spec):
        body = {"ports": ports}
        body.update(spec)
        if selector is not None:
            body["selector"] = selector
        self.create_json({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": name, "namespace": ns}, "spec": body})
        return self.get_json("service", name, "-n", ns)

    def web(self, ns, replicas=3, **spec):
        pods = self.deployment(ns, "web", replicas, HTTPD,
                               [{"name": "http", "containerPort": 8080}])
        svc = self.service(ns, "web", [{"name": "http", "port": 80, "targetPort": "http"}],
                           {"app": "web"},
                           **spec)
        return pods, svc

    def hits(self, ip, port, n):
        seen = []
        for _ in range(n):
            body = http_get(ip, port)
            if body:
                seen.append(body)
        return seen

    # ---- tests -------------------------------------------------------------------------------

    def test_cluster_ip_spreads_over_backends_from_node_and_pod(self):
        ns = self.make_namespace("svc")
        pods, svc = self.web(ns)
        ip = svc["spec"]["clusterIP"]
        self.wait_for(lambda: http_get(ip, 80), what="the ClusterIP to answer")
        seen = self.hits(ip, 80, 30)
        self.assertEqual(len(seen), 30)
        self.assertTrue(set(seen) <= set(pods), seen)
        self.assertGreaterEqual(len(set(seen)), 2, seen)

        loop = "; ".join(["wget -q -O - http://%s/" % ip] * 12)
        self.create_json({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "client", "namespace": ns},
                          "spec": {"restartPolicy": "Never", "containers": [{
                              "name": "main", "image": "busybox",
                              "imagePullPolicy": "IfNotPresent",
                              "command": ["sh", "-c", loop]}]}})
        self.wait_for(lambda: self.phase("client", ns) in ("Succeeded", "Failed"),
                      timeout=90, what="the client pod to finish")
        self.assertEqual(self.phase("client", ns), "Succeeded",
                         self.kubectl("logs", "-n", ns, "client")[1])
        lines = self.ok("logs", "-n", ns, "client").split()
        self.assertEqual(len(lines), 12, lines)
        self.assertTrue(set(lines) <= set(pods), lines)
        self.assertGreaterEqual(len(set(lines)), 2, lines)

    def test_pod_reaches_itself_through_its_service(self):
        ns = self.make_namespace("hairpin")
        # Created first, so the pod gets WEB_SERVICE_HOST (service links).
        self.service(ns, "web", [{"port": 80, "targetPort": "http"}], {"app": "web"})
        # The only backend asks its own Service and records what answers (hairpin).
        cmd = ("mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www && "
               "while true; do wget -q -O - http://$WEB_SERVICE_HOST/ >> /www/seen; "
               "sleep 0.3; done")
        pods = self.deployment(ns, "web", 1, cmd, [{"name": "http", "containerPort": 8080}])
        ip = self.pod(pods[0], ns)["status"]["podIP"]
        self.wait_for(lambda: pods[0] in (http_get(ip, 8080, "/seen") or ""), timeout=60,
                      what="the pod to reach itself through its Service")

    def test_unready_backend_leaves_the_rotation(self):
        ns = self.make_namespace("ready")
        self.make_configmap(ns, "down", {"none": ""})
        ready = {"exec": {"command": ["sh", "-c", "! test -e /down/$(hostname)"]},
                 "periodSeconds": 1, "failureThreshold": 1}
        pods = self.deployment(ns, "web", 2, HTTPD, [{"name": "http", "containerPort": 8080}],
                               readiness=ready,
                               volumes=[{"name": "down", "configMap": {"name": "down"}}])
        svc = self.service(ns, "web", [{"port": 80, "targetPort": 8080}], {"app": "web"})
        ip = svc["spec"]["clusterIP"]
        self.wait_for(lambda: len(set(self.hits(ip, 80, 10))) == 2, timeout=60,
                      what="both backends in the rotation")
        self.ok("patch", "configmap", "down", "-n", ns, "--type=merge",
                "-p", json.dumps({"data": {pods[0]: "1"}}))
        self.wait_for(lambda: set(self.hits(ip, 80, 10)) == {pods[1]}, timeout=120,
                      what="the unready backend to leave the rotation")
        ep = self.get_json("endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web")
        conditions = {e["targetRef"]["name"]: e["conditions"]["ready"]
                      for s in ep["items"] for e in s["endpoints"]}
        self.assertEqual(conditions, {pods[0]: False, pods[1]: True})

    def test_node_port_from_the_node(self):
        ns = self.make_namespace("np")
        pods, svc = self.web(ns, replicas=1, type="NodePort")
        port = svc["spec"]["ports"][0]["nodePort"]
        self.assertTrue(30000 <= port <= 32767)
        self.assertEqual(self.wait_for(lambda: http_get(node.NODE_IP, port),
                                       what="the NodePort to answer"), pods[0])

    def test_load_balancer_ingress_ip(self):
        ns = self.make_namespace("lb")
        pods, svc = self.web(ns, replicas=1, type="LoadBalancer")

        def ingress():
            got = self.get_json("service", "web", "-n", ns)
            return got.get("status", {}).get("loadBalancer", {}).get("ingress")
        addresses = [i["ip"] for i in self.wait_for(ingress, what="an ingress address")]
        self.assertEqual(addresses, [node.NODE_IP])
        self.assertEqual(self.wait_for(lambda: http_get(node.NODE_IP, 80),
                                       what="the load-balancer address to answer"), pods[0])

    def test_external_clients_node_port_local_policy_and_external_ip(self):
        ns = self.make_namespace("etp")
        # The backend answers with the address the request came from (a CGI script of httpd).
        cgi = ("mkdir -p /www/cgi-bin && "
               "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n'"
               " > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && " + HTTPD)
        self.deployment(ns, "web", 1, cgi, [{"name": "http", "containerPort": 8080}])
        svc = self.service(ns, "web", [{"name": "http", "port": 80, "targetPort": "http"}],
                           {"app": "web"}, type="NodePort")
        port = svc["spec"]["ports"][0]["nodePort"]
        # A client outside the node: its own namespace, cabled to the node's bridge.
        client = "skiff-client-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", client], check=True, timeout=30)
        try:
            for cmd in (["link", "add", "cl0", "type", "veth", "peer", "name", "cl1"],
                        ["link", "set", "cl0", "master", "node0"],
                        ["link", "set", "cl0", "up"],
                        ["link", "set", "cl1", "netns", client],
                        ["-n", client, "addr", "add", CLIENT_IP + "/24", "dev", "cl1"],
                        ["-n", client, "link", "set", "cl1", "up"],
                        ["-n", client, "link", "set", "lo", "up"]):
                subprocess.run(["ip"] + cmd, check=True, timeout=30, capture_output=True)

            def seen_from(ip=node.NODE_IP, port=port):
                out = subprocess.run(
                    ["nsenter", "--net=/var/run/netns/" + client, "/usr/bin/python3", "-c",
                     "import urllib.request as u; print(u.urlopen('http://%s:%d/cgi-bin/ip', "
                     "timeout=2).read().decode().strip())" % (ip, port)],
                    capture_output=True, text=True, timeout=30)
                if out.returncode != 0:
                    return None
                # httpd listens on IPv6 and reports "[::ffff:a.b.c.d]" for IPv4 peers.
                return out.stdout.strip().strip("[]").replace("::ffff:", "")
            # Cluster policy: external traffic is masqueraded.
            address = self.wait_for(seen_from, what="the NodePort from outside the node")
            self.assertNotEqual(address, CLIENT_IP)
            # Local policy: the endpoint sees the client itself.
            self.ok("patch", "service", "web", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"externalTrafficPolicy": "Local"}}))
            seen = []
            deadline = time.time() + 60
            while time.time() < deadline and (not seen or seen[-1] != CLIENT_IP):
                seen.append(seen_from())
                time.sleep(0.5)
            self.assertEqual(seen[-1], CLIENT_IP, "addresses seen: %s" % sorted(set(map(str, seen))))
            # An external IP routed to the node reaches the Service as well.
            subprocess.run(["ip", "-n", client, "route", "add", EXTERNAL_IP, "via", node.NODE_IP],
                           check=True, timeout=30)
            self.ok("patch", "service", "web", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"externalIPs": [EXTERNAL_IP]}}))
            self.assertEqual(self.wait_for(lambda: seen_from(EXTERNAL_IP, 80),
                                           what="the external IP from outside the node"),
                             CLIENT_IP)
        finally:
            subprocess.run(["ip", "netns", "del", client], capture_output=True, timeout=30)

    def test_udp_through_a_service_to_manual_endpoints(self):
        ns = self.make_namespace("udp")
        # A selector-less Service whose endpoint is a socket of this process on the node.
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind((node.NODE_IP, 0))
        receiver.settimeout(0.5)
        port = receiver.getsockname()[1]
        try:
            svc = self.service(ns, "dgram", [{"name": "d", "port": 5300, "protocol": "UDP",
                                              "targetPort": port}])
            self.create_json({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "dgram-1", "namespace": ns,
                             "labels": {"kubernetes.io/service-name": "dgram"}},
                "addressType": "IPv4",
                "ports": [{"name": "d", "port": port, "protocol": "UDP"}],
                "endpoints": [{"addresses": [node.NODE_IP]}]})
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                def delivered():
                    try:
                        # Until the endpoint is known, the Service rejects (EPERM here).
                        sender.sendto(b"ping", (svc["spec"]["clusterIP"], 5300))
                        data, _ = receiver.recvfrom(100)
                        return data == b"ping"
                    except OSError:
                        return False
                self.wait_for(delivered, timeout=30, what="a datagram through the Service")
            finally:
                sender.close()
        finally:
            receiver.close()

    def test_session_affinity_pins_a_client(self):
        ns = self.make_namespace("aff")
        pods, svc = self.web(ns, sessionAffinity="ClientIP",
                             sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
        ip = svc["spec"]["clusterIP"]
        self.wait_for(lambda: http_get(ip, 80), what="the ClusterIP to answer")
        seen = self.hits(ip, 80, 20)
        self.assertEqual(len(seen), 20)
        self.assertEqual(len(set(seen)), 1, seen)

    def test_service_without_endpoints_rejects(self):
        ns = self.make_namespace("none")
        svc = self.service(ns, "nothing", [{"port": 80}], {"app": "nothing"})
        ip = svc["spec"]["clusterIP"]

        def refused():
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((ip, 80))
                return False
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            finally:
                s.close()
        started = time.time()
        self.wait_for(refused, timeout=30, what="connection refused")
        self.assertLess(time.time() - started, 30)

    def test_cluster_dns_answers_for_services_from_node_and_pod(self):
        ns = self.make_namespace("dns")
        pods, svc = self.web(ns, replicas=2)
        ip = svc["spec"]["clusterIP"]
        fqdn = "web.%s.svc.cluster.local" % ns
        # Through the kube-dns Service (10.43.0.10) like every pod, from the node.
        self.assertEqual(self.wait_for(lambda: dns_query(fqdn), what="a DNS answer"),
                         (0, [(1, ip)]))
        self.assertEqual(dns_query("nope.%s.svc.cluster.local" % ns), (3, []))  # NXDOMAIN
        self.assertEqual(dns_query(fqdn, qtype=28), (0, []))  # NODATA: no IPv6 address
        rcode, srv = dns_query("_http._tcp." + fqdn, qtype=33)
        self.assertEqual(rcode, 0)
        self.assertIn((33, (0, 100, 80, fqdn)), srv)

        # A pod resolves the short name through its search path and reaches the Service.
        self.create_json({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "client", "namespace": ns},
                          "spec": {"restartPolicy": "Never", "containers": [{
                              "name": "main", "image": "busybox",
                              "imagePullPolicy": "IfNotPresent",
                              "command": ["sh", "-c",
                                          "cat /etc/resolv.conf; nslookup web; "
                                          "wget -q -O - http://web/"]}]}})
        self.wait_for(lambda: self.phase("client", ns) in ("Succeeded", "Failed"),
                      timeout=90, what="the client pod to finish")
        logs = self.ok("logs", "-n", ns, "client")
        self.assertEqual(self.phase("client", ns), "Succeeded", logs)
        self.assertIn("nameserver 10.43.0.10", logs)
        self.assertIn("search %s.svc.cluster.local svc.cluster.local cluster.local" % ns, logs)
        self.assertIn("options ndots:5", logs)
        self.assertIn(ip, logs)
        self.assertIn(logs.split()[-1], pods)

    def test_headless_service_dns_lists_ready_endpoints(self):
        ns = self.make_namespace("headless")
        pods = self.deployment(ns, "db", 2, HTTPD, [{"name": "http", "containerPort": 8080}])
        self.service(ns, "db", [{"name": "http", "port": 8080}], {"app": "db"},
                     clusterIP="None")
        ips = sorted(self.pod(p, ns)["status"]["podIP"] for p in pods)
        fqdn = "db.%s.svc.cluster.local" % ns

        def addresses():
            answer = dns_query(fqdn)
            return answer and sorted(a for t, a in answer[1] if t == 1) == ips
        self.wait_for(addresses, what="one A record per ready endpoint")
        rcode, srv = dns_query("_http._tcp." + fqdn, qtype=33)
        self.assertEqual(rcode, 0)
        self.assertEqual(sorted(a[2] for t, a in srv if t == 33), [8080, 8080])
        # Each endpoint has a name of its own under the Service.
        target = [a[3] for t, a in srv if t == 33][0]
        self.assertTrue(target.endswith("." + fqdn), target)
        rcode, answer = dns_query(target)
        self.assertEqual(rcode, 0)
        self.assertIn(answer[0][1], ips)

    def test_proxy_restart_keeps_established_connections_and_cleanup_removes_rules(self):
        ns = self.make_namespace("restart")
        self.deployment(ns, "echo", 2, ECHO, [{"containerPort": 7000}])
        svc = self.service(ns, "echo", [{"port": 7000}], {"app": "echo"})
        ip = svc["spec"]["clusterIP"]

        def connect():
            s = socket.create_connection((ip, 7000), timeout=3)
            s.settimeout(3)
            return s

        conn = self.wait_for(lambda: self._try(connect), what="a connection to the echo Service")
        try:
            conn.sendall(b"one\n")
            self.assertEqual(conn.recv(100), b"one\n")
            self.stop_proxy()
            type(self).start_proxy()
            self.wait_for(lambda: self._try(lambda: connect().close() or True),
                          what="new connections after the restart")
            conn.sendall(b"two\n")
            self.assertEqual(conn.recv(100), b"two\n")
        finally:
            conn.close()

        # --cleanup removes every rule; a restarted proxy writes them again.
        self.stop_proxy()
        try:
            out = subprocess.run([harness.SKIFF_BIN, "proxy", "--cleanup"], capture_output=True,
                                 text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertNotIn("skiff-proxy", nft_ruleset())
            self.assertNotIn("SKIFF-", iptables_save())
            self.assertIsNone(self._try(connect))
        finally:
            type(self).start_proxy()
        self.wait_for(lambda: self._try(lambda: connect().close() or True),
                      what="the Service after the proxy came back")

    @staticmethod
    def _try(fn):
        try:
            return fn()
        except OSError:
            return None


@harness.requires_modern_kubectl
class IptablesServicesTest(ServicesTest):
    """The same Services through the iptables backend (the behaviour tests that differ by
    backend; DNS and the API objects are the same either way)."""

    PROXY_ARGS = ("--proxy-mode", "iptables")
    test_cluster_dns_answers_for_services_from_node_and_pod = None
    test_headless_service_dns_lists_ready_endpoints = None
    test_unready_backend_leaves_the_rotation = None
    test_load_balancer_ingress_ip = None

    @classmethod
    def proxy_rules_present(cls):
        return "SKIFF-SERVICES" in iptables_save()
