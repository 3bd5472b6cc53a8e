/* skiff-pause: the process that holds a pod sandbox's namespaces open.
 *
 * It does nothing but wait: SIGTERM or SIGINT end it with status 0, SIGCHLD makes it reap any
 * exited children (it is PID 1 of the pod when the pod shares one PID namespace, and orphans are
 * re-parented to it). Built as a static executable so the image needs no libc. Single-threaded. */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SKIFF_PAUSE_VERSION
#define SKIFF_PAUSE_VERSION "3.9"
#endif

static void on_shutdown(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int install(int sig, void (*handler)(int)) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = sig == SIGCHLD ? (SA_NOCLDSTOP | SA_RESTART) : SA_RESTART;
  return sigaction(sig, &action, NULL);
}

int main(int argc, char** argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("skiff-pause %s\n", SKIFF_PAUSE_VERSION);
    return 0;
  }
  if (install(SIGINT, on_shutdown) != 0 || install(SIGTERM, on_shutdown) != 0 ||
      install(SIGCHLD, on_child) != 0) {
    perror("skiff-pause: sigaction");
    return 1;
  }
  /* Signals blocked by whoever started us would never arrive. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (getpid() != 1) fprintf(stderr, "skiff-pause: running as PID %d, not 1\n", (int)getpid());
  for (;;) pause();
}
