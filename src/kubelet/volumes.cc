#include "kubelet/volumes.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "kubelet/json_fields.h"

namespace skiff::kubelet {
namespace fs = std::filesystem;
namespace {

Status io_error(const std::string& what, const std::error_code& ec) {
  return error(StatusCode::kInternal, what + ": " + ec.message());
}

Status write_file(const std::string& path, const std::string& content, int mode) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return error(StatusCode::kInternal, "cannot write " + tmp);
    out << content;
    if (!out.flush()) return error(StatusCode::kInternal, "cannot write " + tmp);
  }
  ::chmod(tmp.c_str(), mode);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return io_error("rename " + path, ec);
  return Status::ok();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_mount_point(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (mount_point == path) return true;
  }
  return false;
}

int mode_of(const Json& v, int fallback) {
  return v.is_number_integer() ? v.get<int>() : fallback;
}

// The files a key→value map gives, optionally narrowed and renamed by `items`.
Result<std::vector<FileToWrite>> files_from_map(const std::map<std::string, std::string>& data,
                                                const Json& items, int default_mode, bool optional,
                                                const std::string& what) {
  std::vector<FileToWrite> files;
  if (!items.is_array() || items.empty()) {
    for (const auto& [k, v] : data) files.push_back({k, v, default_mode});
    return files;
  }
  for (const Json& item : items) {
    std::string key = str(item, "key");
    auto it = data.find(key);
    if (it == data.end()) {
      if (optional) continue;
      return error(StatusCode::kNotFound, "configuration key \"" + key + "\" not found in " + what);
    }
    files.push_back(
        {str(item, "path", key), it->second, mode_of(member(item, "mode"), default_mode)});
  }
  return files;
}

// The downward API's files for a pod.
Result<std::vector<FileToWrite>> downward_files(const Json& pod, const Json& items,
                                                int default_mode) {
  std::vector<FileToWrite> files;
  const Json& meta = member(pod, "metadata");
  for (const Json& item : items) {
    std::string path = str(item, "path");
    std::string value;
    if (item.contains("fieldRef")) {
      std::string field = str(item["fieldRef"], "fieldPath");
      auto render_map = [&](const char* key) {
        std::string out;
        const Json& map = member(meta, key);
        if (map.is_object()) {
          for (auto& [k, v] : map.items()) out += k + "=" + Json(v).dump() + "\n";
        }
        return out;
      };
      if (field == "metadata.labels") {
        value = render_map("labels");
      } else if (field == "metadata.annotations") {
        value = render_map("annotations");
      } else if (field == "metadata.name" || field == "metadata.namespace" ||
                 field == "metadata.uid") {
        value = str(meta, field.substr(9).c_str());
      } else if (field.rfind("metadata.labels['", 0) == 0 ||
                 field.rfind("metadata.annotations['", 0) == 0) {
        bool labels = field[9] == 'l';
        size_t open = field.find("['") + 2;
        size_t close = field.rfind("']");
        value = str(member(meta, labels ? "labels" : "annotations"),
                    field.substr(open, close - open).c_str());
      } else {
        return error(StatusCode::kInvalidArgument, "unsupported downward API field " + field);
      }
    } else if (item.contains("resourceFieldRef")) {
      std::vector<std::pair<std::string, std::string>> none;
      Json fake_container = Json::object();
      fake_container["env"] = Json::array(
          {{{"name", "V"}, {"valueFrom", {{"resourceFieldRef", item["resourceFieldRef"]}}}}});
      const Json& cname = member(item["resourceFieldRef"], "containerName");
      for (const Json& c : member(member(pod, "spec"), "containers")) {
        if (cname.is_null() || str(c, "name") == cname.get<std::string>()) {
          fake_container["resources"] = member(c, "resources");
          break;
        }
      }
      auto env = container_env(pod, fake_container, "", ObjectSource{});
      if (!env.is_ok()) return env.status();
      value = env->empty() ? "" : env->front().second;
    }
    files.push_back({path, value, mode_of(member(item, "mode"), default_mode)});
  }
  return files;
}

}  // namespace

Status write_atomic_dir(const std::string& dir, const std::vector<FileToWrite>& files) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("mkdir " + dir, ec);
  std::string data_link = dir + "/..data";
  // Unchanged: same set of files with the same content and modes.
  if (fs::is_symlink(data_link, ec)) {
    std::string current = dir + "/" + fs::read_symlink(data_link, ec).string();
    bool same = true;
    size_t count = 0;
    for (const auto& entry : fs::recursive_directory_iterator(current, ec)) {
      if (entry.is_regular_file()) ++count;
    }
    if (count != files.size()) same = false;
    for (size_t i = 0; same && i < files.size(); ++i) {
      std::string path = current + "/" + files[i].path;
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 07777) != (unsigned)files[i].mode ||
          read_file(path) != files[i].content) {
        same = false;
      }
    }
    if (same) return Status::ok();
  }
  for (const FileToWrite& f : files) {
    if (f.path.empty() || f.path.front() == '/' || f.path.find("..") != std::string::npos) {
      return error(StatusCode::kInvalidArgument, "invalid file path \"" + f.path + "\"");
    }
  }
  auto stamp = std::chrono::system_clock::now().time_since_epoch().count();
  std::string name = "..skiff_" + std::to_string(stamp);
  std::string target = dir + "/" + name;
  fs::create_directories(target, ec);
  if (ec) return io_error("mkdir " + target, ec);
  for (const FileToWrite& f : files) {
    fs::path p = fs::path(target) / f.path;
    fs::create_directories(p.parent_path(), ec);
    SKIFF_RETURN_IF_ERROR(write_file(p.string(), f.content, f.mode));
  }
  std::string old_target;
  if (fs::is_symlink(data_link, ec)) old_target = fs::read_symlink(data_link, ec).string();
  std::string tmp_link = dir + "/..data_tmp";
  fs::remove(tmp_link, ec);
  fs::create_symlink(name, tmp_link, ec);
  if (ec) return io_error("symlink " + tmp_link, ec);
  fs::rename(tmp_link, data_link, ec);
  if (ec) return io_error("rename " + data_link, ec);
  // Top-level names point through ..data; names no longer present go.
  std::map<std::string, bool> top;
  for (const FileToWrite& f : files) top[f.path.substr(0, f.path.find('/'))] = true;
  for (const auto& [t, _] : top) {
    std::string link = dir + "/" + t;
    if (fs::is_symlink(link, ec)) continue;
    fs::create_symlink("..data/" + t, link, ec);
    if (ec) return io_error("symlink " + link, ec);
  }
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string n = entry.path().filename().string();
    if (n.rfind("..", 0) == 0) continue;
    if (entry.is_symlink() && !top.count(n)) fs::remove(entry.path(), ec);
  }
  if (!old_target.empty() && old_target != name) fs::remove_all(dir + "/" + old_target, ec);
  return Status::ok();
}

VolumeManager::VolumeManager(std::string pods_dir, ObjectSource source)
    : pods_dir_(std::move(pods_dir)), source_(std::move(source)) {}

std::string VolumeManager::volume_dir(const std::string& uid, const std::string& plugin,
                                      const std::string& name) const {
  return pod_dir(uid) + "/volumes/kubernetes.io~" + plugin + "/" + name;
}

Status VolumeManager::set_up(const Json& pod) {
  const Json& meta = member(pod, "metadata");
  std::string uid = str(meta, "uid");
  std::string ns = str(meta, "namespace");
  std::error_code ec;
  fs::create_directories(pod_dir(uid) + "/volumes", ec);
  if (ec) return io_error("mkdir " + pod_dir(uid), ec);
  for (const Json& v : member(member(pod, "spec"), "volumes")) {
    std::string name = str(v, "name");
    auto fail = [&](const Status& s) {
      return error(s.code(), "volume \"" + name + "\": " + s.message());
    };
    if (v.contains("emptyDir")) {
      std::string dir = volume_dir(uid, "empty-dir", name);
      fs::create_directories(dir, ec);
      if (ec) return fail(io_error("mkdir " + dir, ec));
      ::chmod(dir.c_str(), 0777);
      if (str(v["emptyDir"], "medium") == "Memory" && !is_mount_point(dir)) {
        if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "mode=0777") != 0) {
          return fail(error(StatusCode::kInternal, "mount tmpfs: " + std::string(strerror(errno))));
        }
      }
    } else if (v.contains("hostPath")) {
      std::string path = str(v["hostPath"], "path");
      std::string type = str(v["hostPath"], "type");
      struct stat st {};
      bool exists = ::stat(path.c_str(), &st) == 0;
      if (type == "DirectoryOrCreate" && !exists) {
        fs::create_directories(path, ec);
        if (ec) return fail(io_error("mkdir " + path, ec));
        ::chmod(path.c_str(), 0755);
      } else if (type == "FileOrCreate" && !exists) {
        fs::create_directories(fs::path(path).parent_path(), ec);
        std::ofstream touch(path);
        ::chmod(path.c_str(), 0644);
      } else if (!type.empty()) {
        bool ok = exists && ((type == "Directory" && S_ISDIR(st.st_mode)) ||
                             (type == "File" && S_ISREG(st.st_mode)) ||
                             (type == "Socket" && S_ISSOCK(st.st_mode)) ||
                             (type == "CharDevice" && S_ISCHR(st.st_mode)) ||
                             (type == "BlockDevice" && S_ISBLK(st.st_mode)) ||
                             type == "DirectoryOrCreate" || type == "FileOrCreate");
        if (!ok) {
          return fail(error(StatusCode::kFailedPrecondition,
                            "hostPath type check failed: " + path + " is not a " + type));
        }
      }
    } else if (v.contains("configMap") || v.contains("secret")) {
      bool is_cm = v.contains("configMap");
      const Json& src = is_cm ? v["configMap"] : v["secret"];
      std::string obj = str(src, is_cm ? "name" : "secretName");
      bool optional = member(src, "optional") == true;
      auto data = is_cm ? source_.config_map(ns, obj) : source_.secret(ns, obj);
      std::map<std::string, std::string> empty;
      if (!data.is_ok() && !(optional && data.status().code() == StatusCode::kNotFound)) {
        return fail(error(data.status().code(), std::string(is_cm ? "configmap" : "secret") +
                                                    " \"" + obj + "\" not found"));
      }
      auto files = files_from_map(data.is_ok() ? *data : empty, member(src, "items"),
                                  mode_of(member(src, "defaultMode"), 0644), optional, obj);
      if (!files.is_ok()) return fail(files.status());
      SKIFF_RETURN_IF_ERROR(
          write_atomic_dir(volume_dir(uid, is_cm ? "configmap" : "secret", name), *files));
    } else if (v.contains("downwardAPI")) {
      auto files = downward_files(pod, member(v["downwardAPI"], "items"),
                                  mode_of(member(v["downwardAPI"], "defaultMode"), 0644));
      if (!files.is_ok()) return fail(files.status());
      SKIFF_RETURN_IF_ERROR(write_atomic_dir(volume_dir(uid, "downward-api", name), *files));
    } else if (v.contains("projected")) {
      std::vector<FileToWrite> all;
      int default_mode = mode_of(member(v["projected"], "defaultMode"), 0644);
      for (const Json& source : member(v["projected"], "sources")) {
        Result<std::vector<FileToWrite>> files = std::vector<FileToWrite>{};
        if (source.contains("configMap") || source.contains("secret")) {
          bool is_cm = source.contains("configMap");
          const Json& src = is_cm ? source["configMap"] : source["secret"];
          std::string obj = str(src, "name");
          bool optional = member(src, "optional") == true;
          auto data = is_cm ? source_.config_map(ns, obj) : source_.secret(ns, obj);
          if (!data.is_ok()) {
            if (optional && data.status().code() == StatusCode::kNotFound) continue;
            return fail(error(data.status().code(), std::string(is_cm ? "configmap" : "secret") +
                                                        " \"" + obj + "\" not found"));
          }
          files = files_from_map(*data, member(src, "items"), default_mode, optional, obj);
        } else if (source.contains("downwardAPI")) {
          files = downward_files(pod, member(source["downwardAPI"], "items"), default_mode);
        } else {
          return fail(error(StatusCode::kUnimplemented,
                            "unsupported projected source " + source.begin().key()));
        }
        if (!files.is_ok()) return fail(files.status());
        for (auto& f : *files) all.push_back(std::move(f));
      }
      SKIFF_RETURN_IF_ERROR(write_atomic_dir(volume_dir(uid, "projected", name), all));
    } else {
      std::string kind = "unknown";
      for (auto& [k, _] : v.items()) {
        if (k != "name") kind = k;
      }
      return fail(error(StatusCode::kUnimplemented, "volume type " + kind + " is not supported"));
    }
  }
  return Status::ok();
}

Result<std::vector<ContainerMount>> VolumeManager::mounts_for(const Json& pod,
                                                              const Json& container,
                                                              const std::string& pod_ip,
                                                              const std::string& hostname) {
  const Json& meta = member(pod, "metadata");
  std::string uid = str(meta, "uid");
  std::map<std::string, std::pair<std::string, bool>> sources;  // volume → host path, read-only
  for (const Json& v : member(member(pod, "spec"), "volumes")) {
    std::string name = str(v, "name");
    if (v.contains("emptyDir")) sources[name] = {volume_dir(uid, "empty-dir", name), false};
    if (v.contains("hostPath")) sources[name] = {str(v["hostPath"], "path"), false};
    if (v.contains("configMap")) sources[name] = {volume_dir(uid, "configmap", name), true};
    if (v.contains("secret")) sources[name] = {volume_dir(uid, "secret", name), true};
    if (v.contains("downwardAPI")) sources[name] = {volume_dir(uid, "downward-api", name), true};
    if (v.contains("projected")) sources[name] = {volume_dir(uid, "projected", name), true};
  }
  std::vector<ContainerMount> mounts;
  bool mounts_etc_hosts = false;
  for (const Json& m : member(container, "volumeMounts")) {
    std::string name = str(m, "name");
    auto it = sources.find(name);
    if (it == sources.end()) {
      return error(StatusCode::kNotFound, "volume \"" + name + "\" not found in the pod");
    }
    std::string host = it->second.first;
    std::string sub = str(m, "subPath");
    if (!sub.empty()) {
      if (sub.front() == '/' || sub.find("..") != std::string::npos) {
        return error(StatusCode::kInvalidArgument, "invalid subPath \"" + sub + "\"");
      }
      host += "/" + sub;
      std::error_code ec;
      if (!fs::exists(host, ec)) fs::create_directories(host, ec);
    }
    std::string path = str(m, "mountPath");
    if (path == "/etc/hosts") mounts_etc_hosts = true;
    mounts.push_back({host, path, member(m, "readOnly") == true || it->second.second});
  }
  std::error_code ec;
  if (!mounts_etc_hosts && member(member(pod, "spec"), "hostNetwork") != true) {
    std::string hosts = pod_dir(uid) + "/etc-hosts";
    std::string content =
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost "
        "ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
    if (!pod_ip.empty()) content += pod_ip + "\t" + hostname + "\n";
    for (const Json& alias : member(member(pod, "spec"), "hostAliases")) {
      std::string line = str(alias, "ip");
      for (const Json& h : member(alias, "hostnames")) line += "\t" + h.get<std::string>();
      content += line + "\n";
    }
    SKIFF_RETURN_IF_ERROR(write_file(hosts, content, 0644));
    mounts.push_back({hosts, "/etc/hosts", false});
  }
  std::string message_path = str(container, "terminationMessagePath", "/dev/termination-log");
  if (!message_path.empty()) {
    std::string dir = pod_dir(uid) + "/containers/" + str(container, "name");
    fs::create_directories(dir, ec);
    std::string file = dir + "/termination-log";
    if (!fs::exists(file, ec)) SKIFF_RETURN_IF_ERROR(write_file(file, "", 0666));
    mounts.push_back({file, message_path, false});
  }
  return mounts;
}

std::string VolumeManager::termination_message(const std::string& uid,
                                               const std::string& container) const {
  std::string text = read_file(pod_dir(uid) + "/containers/" + container + "/termination-log");
  if (text.size() > 4096) text.resize(4096);  // upstream's per-container cap
  return text;
}

Status VolumeManager::tear_down(const std::string& uid) {
  std::string dir = pod_dir(uid);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return Status::ok();
  std::string empty_dirs = dir + "/volumes/kubernetes.io~empty-dir";
  if (fs::exists(empty_dirs, ec)) {
    for (const auto& entry : fs::directory_iterator(empty_dirs, ec)) {
      std::string p = entry.path().string();
      if (is_mount_point(p) && ::umount2(p.c_str(), MNT_DETACH) != 0) {
        return error(StatusCode::kInternal, "umount " + p + ": " + strerror(errno));
      }
    }
  }
  fs::remove_all(dir, ec);
  if (ec) return io_error("remove " + dir, ec);
  return Status::ok();
}

std::vector<std::string> VolumeManager::pods_on_disk() const {
  std::vector<std::string> uids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(pods_dir_, ec)) {
    if (entry.is_directory()) uids.push_back(entry.path().filename().string());
  }
  return uids;
}

}  // namespace skiff::kubelet
