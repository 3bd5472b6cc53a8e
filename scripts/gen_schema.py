#!/usr/bin/env python3
"""Generates skiff's API schema data from upstream Kubernetes Go sources.

Writes src/api/schema/types.json (every type's fields, mechanically extracted from the Go struct
tags and comment markers of kubernetes/api and kubernetes/apimachinery at one release tag) and
src/api/schema/resources.json (the served resources, from the RESOURCES table below).

Only facts are extracted: field names, JSON names, Go types mapped to schema kinds, protobuf field
numbers, patch strategies and merge keys, list/map/struct markers, optional/required, enum values.
No descriptions are copied.

Usage (run by hand; the build only embeds the committed output):
  scripts/gen_schema.py --api-git DIR --apimachinery-git DIR [--ref v0.32.13] [--out src/api/schema]

DIR is a git directory (bare mirror or .git) of github.com/kubernetes/api and
github.com/kubernetes/apimachinery. Files are read with `git show REF:PATH`, nothing is checked out.

types.json format: {"source": {...}, "types": {NAME: TYPE, ...}}, one type per line, where
  TYPE   = {"fields": [FIELD...], "structType": "atomic"?, "scalar": KIND?}
  FIELD  = {"n": json name, "t": TYPESPEC, "p": proto number?, "required": true?,
            "omitempty": false?, "patchStrategy": s?, "patchMergeKey": s?, "listType": s?,
            "listMapKeys": [s]?, "mapType": s?, "structType": s?, "enum": [s]?}
         | {"inline": type name, "p": proto number?}    (an embedded struct flattened into JSON;
            with "p" protobuf encodes it as a nested message under that number)
  TYPESPEC = BASE | "[]" BASE | "map[string]" BASE
  BASE   = string | bytes | int32 | int64 | double | bool | raw | a type name
  KIND   = the JSON shape of a type that is one JSON value (time, micro-time, duration,
           int-or-string, quantity, raw)
"""

import argparse
import json
import os
import re
import subprocess
import sys

API = "k8s.io/api"
META = "k8s.io/apimachinery/pkg/apis/meta/v1"
RUNTIME = "k8s.io/apimachinery/pkg/runtime"
INTSTR = "k8s.io/apimachinery/pkg/util/intstr"
RESOURCE = "k8s.io/apimachinery/pkg/api/resource"
TYPES = "k8s.io/apimachinery/pkg/types"

# Packages to read: import path -> (repo key, directory in repo, roots). Roots None means every
# struct type of the package is included; otherwise only the named types (and what they reach).
PACKAGES = {
    API + "/core/v1": ("api", "core/v1", None),
    API + "/apps/v1": ("api", "apps/v1", None),
    API + "/batch/v1": ("api", "batch/v1", None),
    API + "/autoscaling/v1": ("api", "autoscaling/v1", None),
    API + "/coordination/v1": ("api", "coordination/v1", None),
    API + "/discovery/v1": ("api", "discovery/v1", None),
    API + "/events/v1": ("api", "events/v1", None),
    API + "/rbac/v1": ("api", "rbac/v1", None),
    API + "/scheduling/v1": ("api", "scheduling/v1", None),
    API + "/policy/v1": ("api", "policy/v1", None),
    # serviceaccounts/token answers with a TokenRequest.
    API + "/authentication/v1": ("api", "authentication/v1", ["TokenRequest"]),
    META: ("apimachinery", "pkg/apis/meta/v1", None),
}

# Types with a JSON encoding of their own (one JSON value), by (import path, Go name).
SPECIAL = {
    (META, "Time"): "time",
    (META, "MicroTime"): "micro-time",
    (META, "Duration"): "duration",
    (META, "FieldsV1"): "raw",
    (INTSTR, "IntOrString"): "int-or-string",
    (RESOURCE, "Quantity"): "quantity",
    (RUNTIME, "RawExtension"): "raw",
}
# Named Go types that are plain primitives in JSON.
PRIMITIVE_ALIASES = {(TYPES, "UID"): "string", (TYPES, "NodeName"): "string"}
GO_PRIMITIVES = {
    "string": "string",
    "bool": "bool",
    "int32": "int32",
    "int64": "int64",
    "int": "int64",
    "float64": "double",
    "interface{}": "raw",
}


def openapi_prefix(import_path):
    if import_path.startswith(API + "/"):
        return "io.k8s.api." + import_path[len(API) + 1:].replace("/", ".")
    if import_path.startswith("k8s.io/apimachinery/"):
        return "io.k8s.apimachinery." + import_path[len("k8s.io/apimachinery/"):].replace("/", ".")
    raise ValueError("no schema name for package " + import_path)


def type_name(import_path, go_name):
    return openapi_prefix(import_path) + "." + go_name


class GoPackage:
    """The declarations skiff needs from one Go package: structs, named types, enum constants."""

    def __init__(self, import_path):
        self.import_path = import_path
        self.structs = {}  # name -> (markers, [field dict], imports)
        self.named = {}  # name -> (underlying Go type, markers, imports)
        self.consts = {}  # type name -> [values]


def git_show(git_dir, ref, path):
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{ref}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def git_ls(git_dir, ref, path):
    out = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "--name-only", ref, path + "/"],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


MARKER_RE = re.compile(r"^//\s*\+([A-Za-z][\w:.-]*)(?:=(.*))?$")


def parse_markers(comment_lines):
    markers = {}
    for line in comment_lines:
        m = MARKER_RE.match(line.strip())
        if m:
            markers.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return markers


def parse_imports(src):
    imports = {}
    block = re.search(r"^import \((.*?)^\)", src, re.S | re.M)
    lines = block.group(1).splitlines() if block else []
    lines += [m.group(1) for m in re.finditer(r"^import (.*)$", src, re.M) if "(" not in m.group(1)]
    for line in lines:
        m = re.match(r'\s*(?:([\w.]+)\s+)?"([^"]+)"', line)
        if m:
            alias = m.group(1) or m.group(2).rsplit("/", 1)[-1]
            imports[alias] = m.group(2)
    return imports


TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def parse_struct_body(body_lines):
    fields = []
    comments = []
    for raw in body_lines:
        line = raw.strip()
        if not line:
            comments = []
            continue
        if line.startswith("//"):
            comments.append(line)
            continue
        m = re.match(r"^(?:(\w+)\s+)?([^`]+?)\s*(?:`(.*)`)?\s*(?://.*)?$", line)
        if not m:
            raise ValueError("cannot parse struct field: " + line)
        name, go_type, tag = m.group(1), m.group(2).strip(), m.group(3) or ""
        if name is None and " " in go_type:
            raise ValueError("cannot parse struct field: " + line)
        if "," in (name or ""):
            raise ValueError("multi-name fields are not supported: " + line)
        fields.append({
            "name": name,
            "type": go_type,
            "tags": dict(TAG_RE.findall(tag)),
            "markers": parse_markers(comments),
        })
        comments = []
    return fields


def parse_go_file(pkg, src):
    # Block comments (license headers, notes inside structs) start a line in these sources.
    src = re.sub(r"^[ \t]*/\*.*?\*/[ \t]*$", "", src, flags=re.S | re.M)
    imports = parse_imports(src)
    lines = src.splitlines()
    i = 0
    comments = []
    in_const = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("//"):
            comments.append(stripped)
            i += 1
            continue
        if not stripped:
            i += 1  # Blank lines keep the comment blocks above a declaration together.
            continue
        if in_const:
            if stripped == ")":
                in_const = False
            else:
                m = re.match(r'^(\w+)\s+(\w+)\s*=\s*"([^"]*)"', stripped)
                if m:
                    pkg.consts.setdefault(m.group(2), []).append(m.group(3))
            i += 1
            comments = []
            continue
        if stripped.startswith("const ("):
            in_const = True
            i += 1
            comments = []
            continue
        m = re.match(r'^const (\w+)\s+(\w+)\s*=\s*"([^"]*)"', stripped)
        if m:
            pkg.consts.setdefault(m.group(2), []).append(m.group(3))
        if stripped.startswith("type ("):
            raise ValueError("grouped type declarations are not supported")
        m = re.match(r"^type (\w+) struct \{(\})?\s*$", line)
        if m:
            body = []
            if not m.group(2):
                i += 1
                while lines[i] != "}":
                    body.append(lines[i])
                    i += 1
            pkg.structs[m.group(1)] = (parse_markers(comments), parse_struct_body(body), imports)
            i += 1
            comments = []
            continue
        m = re.match(r"^type (\w+)\s+=?\s*([^{]+?)\s*(?://.*)?$", line)
        if m:
            pkg.named[m.group(1)] = (m.group(2), parse_markers(comments), imports)
        comments = []
        i += 1


def load_packages(git_dirs, ref):
    packages = {}
    for import_path, (repo, directory, _) in PACKAGES.items():
        pkg = GoPackage(import_path)
        for path in git_ls(git_dirs[repo], ref, directory):
            base = os.path.basename(path)
            skip = (base.endswith("_test.go") or base.endswith("_fuzz.go") or
                    base.startswith(("zz_", "generated")) or "swagger_doc" in base)
            if skip or not base.endswith(".go"):
                continue
            parse_go_file(pkg, git_show(git_dirs[repo], ref, path))
        packages[import_path] = pkg
    return packages


class Generator:

    def __init__(self, packages):
        self.packages = packages
        self.types = {}  # schema type name -> TYPE dict
        self.pending = []

    def want(self, import_path, go_name):
        name = type_name(import_path, go_name)
        if name not in self.types and (import_path, go_name) not in self.pending:
            self.pending.append((import_path, go_name))
        return name

    def resolve(self, go_type, import_path, imports):
        """Maps a Go type to (container, base, enum values)."""
        go_type = go_type.strip()
        while go_type.startswith("*"):
            go_type = go_type[1:]
        if go_type == "[]byte":
            return None, "bytes", None
        if go_type.startswith("[]"):
            container, base, enum = self.resolve(go_type[2:], import_path, imports)
            if container:
                raise ValueError("nested container " + go_type)
            return "list", base, enum
        if go_type.startswith("map["):
            value = go_type[go_type.index("]") + 1:]
            container, base, enum = self.resolve(value, import_path, imports)
            if container:
                raise ValueError("nested container " + go_type)
            return "map", base, None
        if go_type in GO_PRIMITIVES:
            return None, GO_PRIMITIVES[go_type], None
        if "." in go_type:
            alias, go_name = go_type.split(".", 1)
            if alias not in imports:
                raise ValueError("unknown package alias in " + go_type)
            import_path = imports[alias]
        else:
            go_name = go_type
        key = (import_path, go_name)
        if key in PRIMITIVE_ALIASES:
            return None, PRIMITIVE_ALIASES[key], None
        if key in SPECIAL:
            name = type_name(import_path, go_name)
            self.types.setdefault(name, {"fields": [], "scalar": SPECIAL[key]})
            return None, name, None
        pkg = self.packages.get(import_path)
        if pkg is None:
            raise ValueError(f"type {go_type} from unread package {import_path}")
        if go_name in pkg.named:
            underlying, markers, named_imports = pkg.named[go_name]
            container, base, enum = self.resolve(underlying, import_path, named_imports)
            if "enum" in markers and not container and base == "string":
                enum = sorted(pkg.consts.get(go_name, []))
            return container, base, enum
        if go_name in pkg.structs:
            return None, self.want(import_path, go_name), None
        raise ValueError(f"unknown type {go_type} in {import_path}")

    def build(self, import_path, go_name):
        name = type_name(import_path, go_name)
        if name in self.types:
            return
        markers, fields, imports = self.packages[import_path].structs[go_name]
        out = {"fields": []}
        self.types[name] = out
        if "structType" in markers:
            out["structType"] = markers["structType"][-1]
        for f in fields:
            json_tag = f["tags"].get("json")
            proto = proto_number(f["tags"].get("protobuf", ""))
            if json_tag == "-":
                continue
            json_parts = (json_tag or "").split(",")
            if f["name"] is None and (json_tag is None or json_parts[0] == ""):
                container, base, _ = self.resolve(f["type"], import_path, imports)
                if container or "." not in base or self.types.get(base, {}).get("scalar"):
                    raise ValueError(f"{name}: cannot inline {f['type']}")
                entry = {"inline": base}
                if proto:
                    entry["p"] = proto
                out["fields"].append(entry)
                continue
            if json_tag is None:
                print(f"warning: {name}.{f['name']} has no json tag; skipped", file=sys.stderr)
                continue
            if "inline" in json_parts[1:]:
                raise ValueError(f"{name}.{f['name']}: named inline field")
            container, base, enum = self.resolve(f["type"], import_path, imports)
            prefix = {None: "", "list": "[]", "map": "map[string]"}[container]
            entry = {"n": json_parts[0], "t": prefix + base}
            if proto:
                entry["p"] = proto
            omit_empty = "omitempty" in json_parts[1:]
            if not omit_empty:
                entry["omitempty"] = False
            optional = omit_empty or "optional" in f["markers"]
            if "required" in f["markers"] or not optional:
                entry["required"] = True
            m = f["markers"]
            strategy = f["tags"].get("patchStrategy") or (m.get("patchStrategy") or [""])[-1]
            merge_key = f["tags"].get("patchMergeKey") or (m.get("patchMergeKey") or [""])[-1]
            if strategy:
                entry["patchStrategy"] = strategy
            if merge_key:
                entry["patchMergeKey"] = merge_key
            if "listType" in m:
                entry["listType"] = m["listType"][-1]
            if "listMapKey" in m:
                entry["listMapKeys"] = m["listMapKey"]
            if "mapType" in m:
                entry["mapType"] = m["mapType"][-1]
            if "structType" in m:  # Applies to the referenced struct at this use only.
                entry["structType"] = m["structType"][-1]
            if enum:
                entry["enum"] = enum
            out["fields"].append(entry)

    def run(self):
        for import_path, (_, _, roots) in PACKAGES.items():
            pkg = self.packages[import_path]
            for go_name in (roots if roots is not None else sorted(pkg.structs)):
                if (import_path, go_name) not in SPECIAL:
                    self.want(import_path, go_name)
        for (import_path, go_name), scalar in SPECIAL.items():
            if import_path in self.packages:  # meta/v1 Duration, even if nothing uses it
                name = type_name(import_path, go_name)
                self.types.setdefault(name, {"fields": [], "scalar": scalar})
        while self.pending:
            import_path, go_name = self.pending.pop(0)
            self.build(import_path, go_name)
        return self.types


def proto_number(tag):
    parts = tag.split(",")
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return 0


# The served resources, as upstream's discovery shows them at 1.32.
RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]
CONNECT = ["create", "delete", "get", "patch", "update"]
SCALE = ("scale", "autoscaling", "v1", "Scale", STATUS_VERBS)


def status(kind):
    return ("status", None, None, kind, STATUS_VERBS)


# (group, version, resource, singular, kind, namespaced, verbs, shortNames, categories,
#  [(subresource, group, version, response kind, verbs)]); a subresource's group and version
#  None mean the resource's own.
RESOURCES = [
    ("", "v1", "namespaces", "namespace", "Namespace", False,
     ["create", "delete", "get", "list", "patch", "update", "watch"], ["ns"], [],
     [status("Namespace"), ("finalize", None, None, "Namespace", ["update"])]),
    ("", "v1", "pods", "pod", "Pod", True, RW, ["po"], ["all"], [
        ("attach", None, None, "PodAttachOptions", ["create", "get"]),
        ("binding", None, None, "Binding", ["create"]),
        ("ephemeralcontainers", None, None, "Pod", STATUS_VERBS),
        ("eviction", "policy", "v1", "Eviction", ["create"]),
        ("exec", None, None, "PodExecOptions", ["create", "get"]),
        ("log", None, None, "Pod", ["get"]),
        ("portforward", None, None, "PodPortForwardOptions", ["create", "get"]),
        ("proxy", None, None, "PodProxyOptions", CONNECT),
        status("Pod"),
    ]),
    ("", "v1", "nodes", "node", "Node", False, RW, ["no"], [],
     [("proxy", None, None, "NodeProxyOptions", CONNECT), status("Node")]),
    ("", "v1", "services", "service", "Service", True, RW, ["svc"], ["all"],
     [("proxy", None, None, "ServiceProxyOptions", CONNECT), status("Service")]),
    ("", "v1", "endpoints", "endpoints", "Endpoints", True, RW, ["ep"], [], []),
    ("", "v1", "configmaps", "configmap", "ConfigMap", True, RW, ["cm"], [], []),
    ("", "v1", "secrets", "secret", "Secret", True, RW, [], [], []),
    ("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, RW, ["sa"], [],
     [("token", "authentication.k8s.io", "v1", "TokenRequest", ["create"])]),
    ("", "v1", "events", "event", "Event", True, RW, ["ev"], [], []),
    ("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", True, RW, ["quota"], [],
     [status("ResourceQuota")]),
    ("", "v1", "limitranges", "limitrange", "LimitRange", True, RW, ["limits"], [], []),
    ("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", True, RW,
     ["rc"], ["all"], [SCALE, status("ReplicationController")]),
    ("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", False, RW, ["pv"], [],
     [status("PersistentVolume")]),
    ("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", True,
     RW, ["pvc"], [], [status("PersistentVolumeClaim")]),
    ("", "v1", "podtemplates", "podtemplate", "PodTemplate", True, RW, [], [], []),
    ("apps", "v1", "deployments", "deployment", "Deployment", True, RW, ["deploy"], ["all"],
     [SCALE, status("Deployment")]),
    ("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, RW, ["rs"], ["all"],
     [SCALE, status("ReplicaSet")]),
    ("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, RW, ["sts"], ["all"],
     [SCALE, status("StatefulSet")]),
    ("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, RW, ["ds"], ["all"],
     [status("DaemonSet")]),
    ("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", True, RW, [],
     [], []),
    ("batch", "v1", "jobs", "job", "Job", True, RW, [], ["all"], [status("Job")]),
    ("batch", "v1", "cronjobs", "cronjob", "CronJob", True, RW, ["cj"], ["all"],
     [status("CronJob")]),
    ("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, RW, [], [], []),
    ("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True, RW, [], [],
     []),
    ("events.k8s.io", "v1", "events", "event", "Event", True, RW, ["ev"], [], []),
    ("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True, RW, [], [], []),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True, RW, [],
     [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False, RW, [],
     [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding",
     "ClusterRoleBinding", False, RW, [], [], []),
    ("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", False, RW,
     ["pc"], [], []),
]

# API group -> Go package directory under k8s.io/api.
GROUP_PACKAGES = {
    "": "core", "apps": "apps", "batch": "batch", "autoscaling": "autoscaling", "policy": "policy",
    "coordination.k8s.io": "coordination", "discovery.k8s.io": "discovery",
    "events.k8s.io": "events", "rbac.authorization.k8s.io": "rbac",
    "scheduling.k8s.io": "scheduling", "authentication.k8s.io": "authentication",
}


def gvk_type(group, version, kind):
    return f"io.k8s.api.{GROUP_PACKAGES[group]}.{version}.{kind}"


def resources_json(types):
    lines = []
    for (group, version, resource, singular, kind, namespaced, verbs, short_names, categories,
         subresources) in RESOURCES:
        entry = {
            "group": group, "version": version, "resource": resource, "singular": singular,
            "kind": kind, "listKind": kind + "List", "namespaced": namespaced, "verbs": verbs,
            "shortNames": short_names, "categories": categories,
            "type": gvk_type(group, version, kind),
            "listType": gvk_type(group, version, kind + "List"), "subresources": [],
        }
        for name, sub_group, sub_version, sub_kind, sub_verbs in sorted(subresources):
            sub_group = group if sub_group is None else sub_group
            sub_version = version if sub_version is None else sub_version
            entry["subresources"].append({
                "name": name, "group": sub_group, "version": sub_version, "kind": sub_kind,
                "verbs": sub_verbs, "type": gvk_type(sub_group, sub_version, sub_kind),
            })
        for t in [entry["type"], entry["listType"]] + [s["type"] for s in entry["subresources"]]:
            if t not in types:
                raise ValueError(f"{resource}: no type {t}")
        lines.append(json.dumps(entry, separators=(",", ":")))
    return '{"resources":[\n' + ",\n".join(lines) + "\n]}\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api-git", required=True)
    parser.add_argument("--apimachinery-git", required=True)
    parser.add_argument("--ref", default="v0.32.13")
    parser.add_argument("--out", default=os.path.join(here, "..", "src", "api", "schema"))
    args = parser.parse_args()

    packages = load_packages({"api": args.api_git, "apimachinery": args.apimachinery_git}, args.ref)
    types = Generator(packages).run()
    source = {"generator": "scripts/gen_schema.py", "k8s.io/api": args.ref,
              "k8s.io/apimachinery": args.ref}
    lines = [json.dumps(name) + ":" + json.dumps(types[name], separators=(",", ":"))
             for name in sorted(types)]
    with open(os.path.join(args.out, "types.json"), "w") as f:
        f.write('{"source":' + json.dumps(source, separators=(",", ":")) + ',"types":{\n')
        f.write(",\n".join(lines) + "\n}}\n")
    with open(os.path.join(args.out, "resources.json"), "w") as f:
        f.write(resources_json(types))
    print(f"{len(types)} types, {len(RESOURCES)} resources", file=sys.stderr)


if __name__ == "__main__":
    main()
