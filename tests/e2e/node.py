"""A whole node for end-to-end tests: `skiff server` with its agent (kubelet + containerd) inside a
network namespace the test creates, so pod networking never touches the host's interfaces.

The test process itself enters the namespace (setns on the main thread, the one that runs the
tests), so the server it starts, the containerd that starts, kubectl and the harness's own
requests all live there. A bridge `node0` with NODE_IP stands in for the node's NIC (the kernel has
no dummy links). On teardown every pod is deleted, the server stopped, and whatever is left is
removed: container processes and shims started by this node's containerd (found by PID through
the node's cgroup root and containerd socket), mounts under the test's directory, the node's
cgroups, the namespace.
"""

import ctypes
import json
import os
import signal
import subprocess
import time
import unittest
import uuid

import harness

CLONE_NEWNET = 0x40000000
NODE_IP = "172.31.250.1"
NODE_NAME = "e2e-node"
SERVICE_CIDR = "10.43.0.0/16"
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def _ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, timeout=30)


def node_support():
    """None when this machine can run a node, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, containerd)"
    for tool in ("/usr/bin/containerd", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/bin/nsenter"):
        if not os.path.exists(tool):
            return "missing %s" % tool
    images = os.path.join(os.path.dirname(harness.SKIFF_BIN), "images", "pause.tar")
    if not os.path.exists(images):
        return "built-in images missing (%s)" % images
    return None


class NodeNamespace:
    def __init__(self):
        self.name = "skiff-e2e-%d-%s" % (os.getpid(), uuid.uuid4().hex[:6])
        self.orig_fd = None
        self.entered = False

    def enter(self):
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "link", "add", "node0", "type", "bridge")
            _ip("-n", self.name, "addr", "add", NODE_IP + "/24", "dev", "node0")
            _ip("-n", self.name, "link", "set", "node0", "up")
            # A node reaches Service IPs through its default route; the namespace has none, so
            # the Service range gets one of its own (it never leaves the namespace).
            _ip("-n", self.name, "route", "add", SERVICE_CIDR, "dev", "node0")
            self.orig_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
            fd = os.open("/var/run/netns/" + self.name, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            self.entered = True
        except BaseException:
            self.leave()
            raise

    def leave(self):
        if self.orig_fd is not None:
            if self.entered:
                _setns(self.orig_fd)
                self.entered = False
            os.close(self.orig_fd)
            self.orig_fd = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def _mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return sorted(out, key=len, reverse=True)


def _pids_using(socket_path):
    """containerd shims started for this node: their command line names the node's socket."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if socket_path.encode() in args:
            pids.append(int(entry))
    return pids


def _cgroup_dirs(root):
    dirs = []
    base = "/sys/fs/cgroup"
    for hierarchy in os.listdir(base):
        top = os.path.join(base, hierarchy) + root
        if os.path.isdir(top):
            for d, _subdirs, _files in os.walk(top):
                dirs.append(d)
    return sorted(dirs, key=len, reverse=True)


class NodeTestCase(harness.ServerTestCase):
    """One node (server + agent) per test class, in its own network namespace."""

    API_ONLY = False
    SERVER_ARGS = ()
    node_ns = None

    @classmethod
    def setUpClass(cls):
        reason = node_support()
        if reason:
            raise unittest.SkipTest(reason)
        cls.node_ns = NodeNamespace()
        cls.node_ns.enter()
        cls.cgroup_root = "/skiff-e2e-%d" % os.getpid()
        try:
            srv = harness.Server(list(cls.SERVER_ARGS) + [
                "--hostname-override", NODE_NAME, "--node-ip", NODE_IP,
                "--cgroup-root", cls.cgroup_root, "--node-monitor-grace-period", "20s",
            ], harness.TOKENS, agent=True)
            srv.start(timeout=60)
            cls.server = srv
            cls.socket = os.path.join(srv.data_dir, "agent", "containerd", "containerd.sock")
            cls.wait_node_ready()
        except BaseException:
            cls.tear_down_node()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tear_down_node()
        super().tearDownClass()

    @classmethod
    def wait_node_ready(cls, timeout=90):
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            rc, out, err = cls.server.kubectl("get", "node", NODE_NAME, "-o", "json")
            if rc == 0:
                node = json.loads(out)
                for c in node.get("status", {}).get("conditions", []):
                    if c["type"] == "Ready" and c["status"] == "True":
                        return node
                last = out[-300:]
            else:
                last = err
            time.sleep(0.5)
        raise RuntimeError("node never became Ready: %s\n%s" % (last, cls.server.log_tail()))

    @classmethod
    def tear_down_node(cls):
        srv = cls.server
        try:
            if srv is not None and srv.alive():
                # Controllers first, or they would replace the pods deleted below.
                srv.kubectl("delete", "deployments,replicasets,statefulsets,daemonsets,jobs,"
                            "cronjobs,replicationcontrollers", "--all", "--all-namespaces",
                            "--cascade=orphan", "--wait=false", timeout=60)
                srv.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0",
                            "--force", "--wait=false", timeout=60)
                deadline = time.time() + 60
                while time.time() < deadline:
                    rc, out, _ = srv.kubectl("get", "pods", "-A", "-o", "name")
                    if rc == 0 and not out.strip():
                        break
                    time.sleep(0.5)
                # The kubelet has cleaned up (sandboxes, network namespaces, volumes) once
                # its pod directories are gone.
                pods_dir = os.path.join(srv.data_dir, "agent", "pods")
                deadline = time.time() + 60
                while time.time() < deadline and os.path.isdir(pods_dir) and os.listdir(pods_dir):
                    time.sleep(0.5)
            if srv is not None:
                srv._kill()
            # Whatever is left: processes of this node's containers and shims, by PID.
            for pid in _pids_using(getattr(cls, "socket", "/nonexistent")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for d in _cgroup_dirs(cls.cgroup_root):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
            for d in _cgroup_dirs(cls.cgroup_root):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if srv is not None and srv.dir:
                for point in _mounts_under(srv.dir):
                    subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
                srv.stop()
        finally:
            if cls.node_ns is not None:
                cls.node_ns.leave()
                cls.node_ns = None
            cls.server = None

    # ---- helpers -----------------------------------------------------------------------------

    def wait_for(self, predicate, timeout=60, interval=0.5, what="condition"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        self.fail("timed out waiting for %s (last: %r)\n%s" % (what, last, self.server.log_tail(30)))

    def pod(self, name, ns="default"):
        rc, out, _ = self.kubectl("get", "pod", name, "-n", ns, "-o", "json")
        return json.loads(out) if rc == 0 else None

    def phase(self, name, ns="default"):
        p = self.pod(name, ns)
        return p.get("status", {}).get("phase") if p else None

    def container_status(self, name, ns="default"):
        p = self.pod(name, ns)
        statuses = (p or {}).get("status", {}).get("containerStatuses") or [{}]
        return statuses[0]
