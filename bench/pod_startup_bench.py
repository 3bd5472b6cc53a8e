#!/usr/bin/python3
"""Pod startup latency and node agent memory, on one real node.

Runs `skiff server --disable-agent` (control plane) and a separate `skiff agent` (kubelet with its
own containerd) inside a network namespace made for the run (tests/e2e/node.py), waits for the
node to be Ready, then creates N pods (busybox, already imported; imagePullPolicy IfNotPresent)
at once through the API and measures, per pod, the time from its create request to the first
watch event that shows it Running with its container started. Prints p50/p90/p99/max and the
agent's RSS (the `skiff agent` process alone: containerd and shims excluded) idle and with the
pods running. Figures only; nothing is asserted.

Usage (root): bench/pod_startup_bench.py [--pods 30] [--rounds 1] [--skiff build/skiff]
"""

import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def percentile(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skiff", default=os.path.join(HERE, "..", "build", "skiff"))
    args = ap.parse_args()
    os.environ["SKIFF_BIN"] = os.path.abspath(args.skiff)

    import harness  # noqa: E402 (after SKIFF_BIN is set)
    import node  # noqa: E402

    reason = node.node_support()
    if reason:
        print("pod_startup_bench: cannot run: " + reason)
        return 1
    ns = node.NodeNamespace()
    ns.enter()
    srv = None
    agent = None
    cgroup_root = "/skiff-bench-%d" % os.getpid()
    try:
        srv = harness.Server([], None).start(timeout=60)
        agent_log = open(os.path.join(srv.dir, "agent.log"), "wb")
        agent = subprocess.Popen(
            [harness.SKIFF_BIN, "agent", "--kubeconfig", srv.kubeconfig, "--data-dir",
             srv.data_dir, "--hostname-override", node.NODE_NAME, "--node-ip", node.NODE_IP,
             "--cgroup-root", cgroup_root], stdout=agent_log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            rc, out, _ = srv.kubectl("get", "node", node.NODE_NAME, "-o", "json")
            if rc == 0 and any(c["type"] == "Ready" and c["status"] == "True"
                               for c in json.loads(out).get("status", {}).get("conditions", [])):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("node not Ready")
        time.sleep(5)
        idle_rss = rss_mib(agent.pid)
        print("agent RSS idle: %.1f MiB" % idle_rss)

        ctx = ssl.create_default_context(cafile=srv.ca)
        tls = os.path.join(srv.data_dir, "tls")
        ctx.load_cert_chain(os.path.join(tls, "admin.crt"), os.path.join(tls, "admin.key"))
        all_latencies = []
        loaded_rss = 0.0
        for rnd in range(args.rounds):
            names = ["bench-%d-%d" % (rnd, i) for i in range(args.pods)]
            created = {}
            running = {}
            done = threading.Event()

            def watch():
                conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=300)
                conn.request("GET", "/api/v1/namespaces/default/pods?watch=1")
                resp = conn.getresponse()
                buf = b""
                while not done.is_set():
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        ev = json.loads(line)
                        pod = ev["object"]
                        name = pod["metadata"]["name"]
                        st = pod.get("status", {})
                        cs = st.get("containerStatuses") or []
                        if (name in names and name not in running and st.get("phase") == "Running"
                                and cs and "running" in cs[0].get("state", {})):
                            running[name] = time.time()
                            if len(running) == len(names):
                                done.set()
                conn.close()

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            time.sleep(0.5)

            def create(name):
                body = json.dumps({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                        "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}})
                conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=60)
                created[name] = time.time()
                conn.request("POST", "/api/v1/namespaces/default/pods", body=body,
                             headers={"Content-Type": "application/json"})
                conn.getresponse().read()
                conn.close()

            threads = [threading.Thread(target=create, args=(n,)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done.wait(300)
            latencies = [running[n] - created[n] for n in names if n in running]
            all_latencies += latencies
            time.sleep(3)
            loaded_rss = max(loaded_rss, rss_mib(agent.pid))
            print("round %d: %d/%d pods Running; p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
                rnd, len(latencies), len(names), percentile(latencies, 50) * 1000,
                percentile(latencies, 99) * 1000, max(latencies or [0]) * 1000))
            srv.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true", timeout=300)

        print("pods: %d x %d rounds" % (args.pods, args.rounds))
        print("startup latency (create -> Running seen by a watch): p50 %.0f ms, p90 %.0f ms, "
              "p99 %.0f ms, max %.0f ms" % (
                  percentile(all_latencies, 50) * 1000, percentile(all_latencies, 90) * 1000,
                  percentile(all_latencies, 99) * 1000, max(all_latencies or [0]) * 1000))
        print("agent RSS idle %.1f MiB, with %d pods %.1f MiB" % (idle_rss, args.pods, loaded_rss))
        return 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)
        if srv is not None:
            sock = os.path.join(srv.data_dir, "agent", "containerd", "containerd.sock")
            for pid in node._pids_using(sock):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            for d in node._cgroup_dirs(cgroup_root):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), 9)
                except OSError:
                    pass
            time.sleep(0.5)
            for d in node._cgroup_dirs(cgroup_root):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            for point in node._mounts_under(srv.dir):
                subprocess.run(["umount", "-l", point], capture_output=True)
            srv.stop()
        ns.leave()


if __name__ == "__main__":
    sys.exit(main())
