/* skiff-crun: runs crun for containerd's runc shim (the runtime's BinaryName), arguments as given.
 *
 * crun refuses a "hybrid" cgroup layout (cgroup v1 controllers under a tmpfs /sys/fs/cgroup plus
 * a cgroup2 hierarchy at /sys/fs/cgroup/unified) as soon as that v2 hierarchy holds a controller.
 * On such a host this program gives crun a private mount namespace in which the v2 hierarchy is
 * detached, so crun sees plain cgroup v1, which it supports; every other host gets crun as it is.
 * The namespace lives only as long as this process: containers get namespaces of their own, and
 * nothing crun does in this one needs to be seen outside it (its state is files under --root).
 *
 * Static and single-threaded, so that it costs the shim next to nothing on every call. */

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef SKIFF_CRUN_PATH
#define SKIFF_CRUN_PATH "/usr/bin/crun"
#endif

#define TMPFS_MAGIC_VALUE 0x01021994
#define CGROUP2_MAGIC_VALUE 0x63677270

static const char kUnified[] = "/sys/fs/cgroup/unified";

static int is_fs(const char* path, long magic) {
  struct statfs fs;
  return statfs(path, &fs) == 0 && (long)fs.f_type == magic;
}

static int is_hybrid(void) {
  return is_fs("/sys/fs/cgroup", TMPFS_MAGIC_VALUE) && is_fs(kUnified, CGROUP2_MAGIC_VALUE);
}

int main(int argc, char** argv) {
  (void)argc;
  if (is_hybrid()) {
    if (unshare(CLONE_NEWNS) != 0) {
      fprintf(stderr, "skiff-crun: unshare(CLONE_NEWNS): %s\n", strerror(errno));
      return 1;
    }
    /* Private first: on a host whose mounts are shared, detaching it would otherwise detach it
     * from the host too. */
    if (mount(NULL, kUnified, NULL, MS_PRIVATE, NULL) != 0 || umount2(kUnified, MNT_DETACH) != 0) {
      fprintf(stderr, "skiff-crun: detaching %s: %s\n", kUnified, strerror(errno));
      return 1;
    }
  }
  argv[0] = (char*)"crun";
  execv(SKIFF_CRUN_PATH, argv);
  execvp("crun", argv);
  fprintf(stderr, "skiff-crun: running crun: %s\n", strerror(errno));
  return 127;
}
