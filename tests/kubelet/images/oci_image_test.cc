#include "kubelet/images/oci_image.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "base/pki.h"
#include "base/process.h"
#include "kubelet/images/builtin.h"
#include "kubelet/images/import.h"
#include "kubelet/images/tar.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::images {
namespace {

using nlohmann::json;
using std::chrono::seconds;

std::map<std::string, TarEntry> by_name(const std::string& archive) {
  auto entries = read_tar_bytes(archive);
  EXPECT_TRUE(entries.is_ok()) << entries.status().to_string();
  std::map<std::string, TarEntry> out;
  if (!entries.is_ok()) return out;
  for (TarEntry& e : *entries) out[e.name] = std::move(e);
  return out;
}

std::string blob_path(const std::string& digest) {
  EXPECT_EQ(digest.rfind("sha256:", 0), 0U) << digest;
  return "blobs/sha256/" + digest.substr(7);
}

ImageSpec sample_spec() {
  ImageSpec spec;
  spec.ref_name = "example.com/team/app:1.0";
  spec.config.entrypoint = {"/bin/app"};
  spec.config.cmd = {"--serve"};
  spec.config.env = {"PATH=/bin", "MODE=test"};
  spec.config.working_dir = "/work";
  spec.config.user = "1000:1000";
  spec.layer = {LayerEntry::directory("work"), LayerEntry::file("/bin/app", "#!/bin/sh\n", 0755),
                LayerEntry::symlink("usr/bin/app", "/bin/app"),
                LayerEntry::file("etc/app/conf", "x=1\n")};
  return spec;
}

TEST(Sha256Test, KnownVector) {
  EXPECT_EQ(sha256_digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(OciImageTest, LayoutIndexManifestConfigAndLayerAgree) {
  auto built = build_oci_image(sample_spec());
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  auto files = by_name(built->archive);
  ASSERT_TRUE(files.count("oci-layout"));
  EXPECT_EQ(json::parse(files["oci-layout"].content)["imageLayoutVersion"], "1.0.0");

  json index = json::parse(files["index.json"].content);
  EXPECT_EQ(index["schemaVersion"], 2);
  ASSERT_EQ(index["manifests"].size(), 1U);
  const json& desc = index["manifests"][0];
  EXPECT_EQ(desc["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(desc["digest"], built->manifest_digest);
  EXPECT_EQ(desc["annotations"]["org.opencontainers.image.ref.name"], "example.com/team/app:1.0");
  EXPECT_EQ(desc["platform"]["os"], "linux");
  EXPECT_EQ(desc["platform"]["architecture"], native_architecture());

  // Every blob is stored under its own digest.
  for (const std::string& digest :
       {built->manifest_digest, built->config_digest, built->layer_digest}) {
    ASSERT_TRUE(files.count(blob_path(digest))) << digest;
    EXPECT_EQ(sha256_digest(files[blob_path(digest)].content), digest);
  }
  const std::string& manifest_bytes = files[blob_path(built->manifest_digest)].content;
  EXPECT_EQ(desc["size"], manifest_bytes.size());
  json manifest = json::parse(manifest_bytes);
  EXPECT_EQ(manifest["config"]["digest"], built->config_digest);
  EXPECT_EQ(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
  EXPECT_EQ(manifest["config"]["size"], files[blob_path(built->config_digest)].content.size());
  ASSERT_EQ(manifest["layers"].size(), 1U);
  EXPECT_EQ(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
  EXPECT_EQ(manifest["layers"][0]["digest"], built->layer_digest);
  EXPECT_EQ(manifest["layers"][0]["size"], files[blob_path(built->layer_digest)].content.size());

  json config = json::parse(files[blob_path(built->config_digest)].content);
  EXPECT_EQ(config["os"], "linux");
  EXPECT_EQ(config["rootfs"]["type"], "layers");
  EXPECT_EQ(config["rootfs"]["diff_ids"], json::array({built->layer_digest}));
  EXPECT_EQ(config["config"]["Entrypoint"], json::array({"/bin/app"}));
  EXPECT_EQ(config["config"]["Cmd"], json::array({"--serve"}));
  EXPECT_EQ(config["config"]["Env"], json::array({"PATH=/bin", "MODE=test"}));
  EXPECT_EQ(config["config"]["WorkingDir"], "/work");
  EXPECT_EQ(config["config"]["User"], "1000:1000");

  // The layer: parents first, leading '/' dropped, modes kept.
  auto layer = read_tar_bytes(files[blob_path(built->layer_digest)].content);
  ASSERT_TRUE(layer.is_ok());
  std::vector<std::string> names;
  for (const TarEntry& e : *layer) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"work/", "bin/", "bin/app", "usr/", "usr/bin/",
                                             "usr/bin/app", "etc/", "etc/app/", "etc/app/conf"}));
  EXPECT_EQ((*layer)[2].mode, 0755U);
  EXPECT_EQ((*layer)[2].content, "#!/bin/sh\n");
  EXPECT_EQ((*layer)[5].link_target, "/bin/app");
}

TEST(OciImageTest, DeterministicAndSensitiveToContent) {
  auto a = build_oci_image(sample_spec());
  auto b = build_oci_image(sample_spec());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->archive, b->archive);
  EXPECT_EQ(a->manifest_digest, b->manifest_digest);
  ImageSpec changed = sample_spec();
  changed.layer[1].content = "#!/bin/sh\nexit 1\n";
  auto c = build_oci_image(changed);
  ASSERT_TRUE(c.is_ok());
  EXPECT_NE(c->layer_digest, a->layer_digest);
  EXPECT_NE(c->manifest_digest, a->manifest_digest);
}

TEST(OciImageTest, BadSpecsAreRejected) {
  ImageSpec spec = sample_spec();
  spec.layer.push_back(LayerEntry::file("bin/app", "again"));
  EXPECT_EQ(build_oci_image(spec).status().code(), StatusCode::kInvalidArgument);
  spec = sample_spec();
  spec.layer.push_back(LayerEntry::file("etc/../../escape", "x"));
  EXPECT_EQ(build_oci_image(spec).status().code(), StatusCode::kInvalidArgument);
  spec = sample_spec();
  spec.ref_name = "";
  EXPECT_EQ(build_oci_image(spec).status().code(), StatusCode::kInvalidArgument);
  spec = sample_spec();
  spec.layer.push_back(LayerEntry::host_file("bin/missing", "/nonexistent/file"));
  EXPECT_EQ(build_oci_image(spec).status().code(), StatusCode::kNotFound);
}

TEST(OciImageTest, HostFilesAreCopiedAndRefsAreReadBack) {
  testing::TempDir dir("skiff-oci");
  ASSERT_TRUE(pki::write_file_atomic(dir.sub("payload"), "payload bytes", 0644).is_ok());
  ImageSpec spec;
  spec.ref_name = "registry.example/payload:v2";
  spec.layer = {LayerEntry::host_file("opt/payload", dir.sub("payload"), 0700)};
  auto digest = write_oci_image(spec, dir.sub("image.tar"));
  ASSERT_TRUE(digest.is_ok()) << digest.status().to_string();
  auto refs = image_refs_in_tar(dir.sub("image.tar"));
  ASSERT_TRUE(refs.is_ok()) << refs.status().to_string();
  EXPECT_EQ(*refs, std::vector<std::string>{"registry.example/payload:v2"});
  // Independent check of the stored blob's digest with coreutils.
  std::string hex = digest->substr(7);
  auto listing = run_command({"tar", "-xOf", dir.sub("image.tar"), "blobs/sha256/" + hex},
                             std::chrono::seconds(30));
  ASSERT_TRUE(listing.is_ok() && listing->status.success());
  EXPECT_EQ(sha256_digest(listing->out), *digest);
}

TEST(ImageRefsTest, DockerArchiveRepoTagsAndNonImages) {
  testing::TempDir dir("skiff-oci");
  TarWriter docker;
  ASSERT_TRUE(docker
                  .add_file("manifest.json",
                            R"([{"Config":"c.json","RepoTags":["busybox:1.36","x/y:z"],)"
                            R"("Layers":[]}])",
                            0644)
                  .is_ok());
  ASSERT_TRUE(pki::write_file_atomic(dir.sub("docker.tar"), docker.finish(), 0644).is_ok());
  auto refs = image_refs_in_tar(dir.sub("docker.tar"));
  ASSERT_TRUE(refs.is_ok());
  EXPECT_EQ(*refs, (std::vector<std::string>{"busybox:1.36", "x/y:z"}));

  TarWriter other;
  ASSERT_TRUE(other.add_file("readme", "hi", 0644).is_ok());
  ASSERT_TRUE(pki::write_file_atomic(dir.sub("other.tar"), other.finish(), 0644).is_ok());
  EXPECT_EQ(image_refs_in_tar(dir.sub("other.tar")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image_refs_in_tar(dir.sub("missing.tar")).status().code(), StatusCode::kNotFound);
}

TEST(BuiltinImagesTest, BusyboxSpecLinksAppletsAndHasUsers) {
  ImageSpec spec =
      busybox_image_spec("/bin/busybox", {"bin/sh", "/usr/bin/wget", "bin/busybox", "bin/sh"});
  EXPECT_EQ(spec.ref_name, "docker.io/library/busybox:latest");
  EXPECT_EQ(spec.config.cmd, std::vector<std::string>{"sh"});
  std::map<std::string, LayerEntry> layer;
  for (const LayerEntry& e : spec.layer) {
    EXPECT_TRUE(layer.emplace(e.path, e).second) << "duplicate " << e.path;
  }
  EXPECT_EQ(layer["bin/busybox"].source_path, "/bin/busybox");
  EXPECT_EQ(layer["bin/sh"].kind, LayerEntry::Kind::kSymlink);
  EXPECT_EQ(layer["bin/sh"].link_target, "/bin/busybox");
  EXPECT_EQ(layer["usr/bin/wget"].link_target, "/bin/busybox");
  EXPECT_EQ(layer["tmp"].mode, 01777U);
  EXPECT_NE(layer["etc/passwd"].content.find("root:x:0:0:"), std::string::npos);
  EXPECT_NE(layer["etc/passwd"].content.find("nobody:x:65534:65534:"), std::string::npos);
  EXPECT_NE(layer["etc/group"].content.find("nobody:x:65534:"), std::string::npos);
}

TEST(BuiltinImagesTest, PauseSpec) {
  ImageSpec spec = pause_image_spec("/some/skiff-pause");
  EXPECT_EQ(spec.ref_name, "registry.k8s.io/pause:3.9");
  EXPECT_EQ(spec.config.entrypoint, std::vector<std::string>{"/pause"});
  EXPECT_EQ(spec.config.user, "65535:65535");
  ASSERT_EQ(spec.layer.size(), 1U);
  EXPECT_EQ(spec.layer[0].path, "pause");
  EXPECT_EQ(spec.layer[0].source_path, "/some/skiff-pause");
}

TEST(BuiltinImagesTest, ImagesDirIsNextToTheExecutable) {
  auto dir = builtin_images_dir();
  ASSERT_TRUE(dir.is_ok());
  char exe[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", exe, sizeof(exe) - 1), 0);
  EXPECT_EQ(*dir, std::filesystem::path(exe).parent_path().string() + "/images");
}

// The archives the build wrote (the test target depends on them).
TEST(BuiltinImagesTest, BuiltArchives) {
  std::string dir = SKIFF_BUILTIN_IMAGES_DIR;
  auto pause_refs = image_refs_in_tar(dir + "/pause.tar");
  ASSERT_TRUE(pause_refs.is_ok()) << pause_refs.status().to_string();
  EXPECT_EQ(*pause_refs, std::vector<std::string>{"registry.k8s.io/pause:3.9"});
  if (!std::filesystem::exists(dir + "/busybox.tar")) {
    GTEST_SKIP() << "busybox.tar was not built (no static busybox on the build machine)";
  }
  auto archive = pki::read_file(dir + "/busybox.tar");
  ASSERT_TRUE(archive.is_ok());
  auto files = by_name(*archive);
  json index = json::parse(files["index.json"].content);
  json manifest =
      json::parse(files[blob_path(index["manifests"][0]["digest"].get<std::string>())].content);
  auto layer =
      read_tar_bytes(files[blob_path(manifest["layers"][0]["digest"].get<std::string>())].content);
  ASSERT_TRUE(layer.is_ok());
  std::map<std::string, TarEntry> entries;
  for (TarEntry& e : *layer) entries[e.name] = std::move(e);
  EXPECT_EQ(entries["bin/sh"].link_target, "/bin/busybox");
  EXPECT_EQ(entries["bin/busybox"].mode, 0755U);
  EXPECT_GT(entries["bin/busybox"].size, 100000U);
  EXPECT_NE(entries["etc/passwd"].content.find("nobody"), std::string::npos);
  EXPECT_TRUE(entries.count("tmp/"));
}

// skiff-pause: SIGTERM ends it with status 0.
TEST(PauseBinaryTest, ExitsZeroOnSigterm) {
  for (int sig : {SIGTERM, SIGINT}) {
    ProcessOptions options;
    testing::TempDir dir("skiff-pause");
    options.argv = {SKIFF_PAUSE_BINARY};
    options.log_path = dir.sub("log");
    auto p = Process::spawn(options);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    // It announces itself (not PID 1) once its handlers are installed.
    for (int i = 0; i < 500 && pki::read_file(dir.sub("log"))->empty(); ++i) usleep(10000);
    EXPECT_FALSE(p->try_wait().has_value());
    p->signal(sig);
    auto status = p->wait_for(std::chrono::seconds(5));
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(status->success()) << status->to_string();
  }
}

// As PID 1 of a PID namespace, skiff-pause reaps orphans re-parented to it.
TEST(PauseBinaryTest, ReapsOrphansAsPidOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a PID namespace";
  auto unshare = find_executable("unshare", "/usr/bin:/bin:/usr/sbin:/sbin");
  auto nsenter = find_executable("nsenter", "/usr/bin:/bin:/usr/sbin:/sbin");
  if (!unshare.is_ok() || !nsenter.is_ok()) GTEST_SKIP() << "unshare/nsenter not installed";
  ProcessOptions options;
  // --fork: the PID namespace's first process is the child, which execs pause as PID 1.
  options.argv = {*unshare, "--pid", "--fork", "--kill-child", SKIFF_PAUSE_BINARY};
  auto p = Process::spawn(options);
  ASSERT_TRUE(p.is_ok());
  // Find pause: unshare's child.
  pid_t pause_pid = -1;
  for (int i = 0; i < 500 && pause_pid < 0; ++i) {
    auto children = pki::read_file("/proc/" + std::to_string(p->pid()) + "/task/" +
                                   std::to_string(p->pid()) + "/children");
    if (children.is_ok() && !children->empty()) pause_pid = std::stoi(*children);
    if (pause_pid < 0) usleep(10000);
  }
  ASSERT_GT(pause_pid, 0);
  // A shell inside the namespace leaves a short-lived orphan behind; it is re-parented to pause.
  // (Its output goes elsewhere: run_command waits for the end of the shell's pipes.)
  auto orphan = run_command({*nsenter, "-t", std::to_string(pause_pid), "-p", "--", "/bin/sh", "-c",
                             "sleep 1.5 >/dev/null 2>&1 & echo $!"},
                            seconds(10));
  ASSERT_TRUE(orphan.is_ok() && orphan->status.success()) << orphan->err;
  // Once it has exited, pause must have reaped it: no zombie child of pause remains.
  std::string children_file =
      "/proc/" + std::to_string(pause_pid) + "/task/" + std::to_string(pause_pid) + "/children";
  bool adopted = false;
  bool reaped = false;
  // The orphan lives long enough to be seen adopted even when the shell is slow to return.
  for (int i = 0; i < 600 && !reaped; ++i) {
    auto read = pki::read_file(children_file);
    std::string children = read.is_ok() ? *read : "";
    if (!children.empty()) adopted = true;
    if (adopted && children.empty()) reaped = true;
    usleep(10000);
  }
  EXPECT_TRUE(adopted) << "the orphan never became pause's child";
  EXPECT_TRUE(reaped) << "pause left a zombie behind";
  // As PID 1 it still ends on SIGTERM (PID 1 gets only the signals it handles), with status 0,
  // which unshare passes on.
  ASSERT_EQ(kill(pause_pid, SIGTERM), 0);
  auto status = p->wait_for(std::chrono::seconds(5));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->success()) << status->to_string();
}

}  // namespace
}  // namespace skiff::kubelet::images
