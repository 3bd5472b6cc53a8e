"""A smoke run with every versioned kubectl installed next to the gcloud dispatcher.

Every version: version, get ns, create/get/delete configmap (1.32+ send protobuf for `create
configmap`), apply -f with default validation, and an unknown field refused by it: every one of
these kubectls asks the server for strict field validation ("strict decoding error").
"""

import json
import unittest

import harness
from harness import ServerTestCase, requires_modern_kubectl

tearDownModule = harness.stop_shared

CM_YAML = """apiVersion: v1
kind: ConfigMap
metadata:
  name: %s
data:
  who: "%s"
"""


@requires_modern_kubectl
class KubectlVersions(ServerTestCase):

    def smoke(self, version):
        minor = int(version.split(".")[1])
        v = {"version": version}
        info = json.loads(self.ok("version", "-o", "json", **v))
        self.assertRegex(info["clientVersion"]["gitVersion"], r"^v%s\.\d+$" % version.replace(".", r"\."))
        self.assertEqual((info["serverVersion"]["major"], info["serverVersion"]["minor"]), ("1", "32"))
        self.assertRegex(info["serverVersion"]["gitVersion"], r"^v1\.32\.")
        self.assertIn("namespace/default", self.ok("get", "ns", "-o", "name", **v).split())
        ns = self.uniq("v%d" % minor)
        self.create_json({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

        out = self.ok("create", "configmap", "gen", "-n", ns, "--from-literal=k=v", **v)
        self.assertEqual(out.strip(), "configmap/gen created")
        got = json.loads(self.ok("get", "configmap", "gen", "-n", ns, "-o", "json", **v))
        self.assertEqual(got["data"], {"k": "v"})
        self.assertEqual(self.ok("delete", "configmap", "gen", "-n", ns, **v).strip(),
                         'configmap "gen" deleted')
        self.fails("get", "configmap", "gen", "-n", ns, **v)

        path = self.server.write("cm-%s.yaml" % ns, CM_YAML % ("applied", version))
        extra = []
        out = self.ok("apply", "-f", path, "-n", ns, *extra, **v)
        self.assertEqual(out.strip(), "configmap/applied created")
        out = self.ok("apply", "-f", path, "-n", ns, *extra, **v)
        self.assertEqual(out.strip(), "configmap/applied unchanged")
        self.server.write("cm-%s.yaml" % ns, CM_YAML % ("applied", version + "-changed"))
        out = self.ok("apply", "-f", path, "-n", ns, *extra, **v)
        self.assertEqual(out.strip(), "configmap/applied configured")
        got = json.loads(self.ok("get", "configmap", "applied", "-n", ns, "-o", "json", **v))
        self.assertEqual(got["data"], {"who": version + "-changed"})

        bad = self.server.write("bad-%s.yaml" % ns, CM_YAML % ("typo", version) + "bogus: 1\n")
        out = self.fails("apply", "-f", bad, "-n", ns, **v)
        self.assertIn('unknown field "bogus"', out)
        self.fails("get", "configmap", "typo", "-n", ns, **v)


def _add(version):
    def test(self):
        self.smoke(version)
    minor = int(version.split(".")[1])
    needs = ["OpenAPI and strict field validation for apply"]
    if minor >= 32:
        needs.append("protobuf bodies for create configmap")
    test.__doc__ = "kubectl %s smoke%s" % (version, " (needs: %s)" % ", ".join(needs) if needs else "")
    test.__name__ = "test_kubectl_%s" % version.replace(".", "_")
    setattr(KubectlVersions, test.__name__, test)


for _v in sorted(harness.versioned_kubectls(), key=lambda s: int(s.split(".")[1])):
    if 27 <= int(_v.split(".")[1]) <= 33:
        _add(_v)


if __name__ == "__main__":
    unittest.main()
