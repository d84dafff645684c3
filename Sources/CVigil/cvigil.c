#define _GNU_SOURCE
#include "cvigil.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <spawn.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int cvigil_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int cvigil_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int cvigil_pidfd_reap(int pidfd, int *status) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    for (;;) {
        int r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG);
        if (r == -1 && errno == EINTR) continue;
        if (r == -1) return -1;
        break;
    }
    if (info.si_pid == 0) return 0;
    if (status) {
        if (info.si_code == CLD_EXITED) *status = (info.si_status & 0xff) << 8;
        else *status = info.si_status & 0x7f;
    }
    return 1;
}

int cvigil_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 int out_fd, const char *cwd, int new_session, int new_group) {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    int rc = posix_spawnattr_init(&attr);
    if (rc != 0) return rc;
    rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) { posix_spawnattr_destroy(&attr); return rc; }

    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (new_session) flags |= POSIX_SPAWN_SETSID;
    else if (new_group) { flags |= POSIX_SPAWN_SETPGROUP; posix_spawnattr_setpgroup(&attr, 0); }
    posix_spawnattr_setflags(&attr, flags);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);

    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
        posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
    }
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (cwd) posix_spawn_file_actions_addchdir_np(&actions, cwd);

    rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return rc;
}

static volatile int signal_pipe_fd = -1;

static void signal_pipe_handler(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (signal_pipe_fd >= 0) {
        ssize_t n = write(signal_pipe_fd, &b, 1);
        (void)n;
    }
    errno = saved;
}

int cvigil_install_signal_pipe(int write_fd, const int *signals, int count) {
    signal_pipe_fd = write_fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = signal_pipe_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int i = 0; i < count; i++) {
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return 0;
}

void cvigil_ignore_sigpipe(void) {
    signal(SIGPIPE, SIG_IGN);
}

int cvigil_errno(void) { return errno; }

#define CVIGIL_EXT4_IOC_SHUTDOWN _IOR('X', 125, unsigned int)
int cvigil_ext4_shutdown(int fd) {
    unsigned int flags = 2; /* EXT4_GOING_FLAGS_NOLOGFLUSH */
    return ioctl(fd, CVIGIL_EXT4_IOC_SHUTDOWN, &flags);
}

#include <sys/vfs.h>
long cvigil_fs_type(const char *path) {
    struct statfs st;
    if (statfs(path, &st) != 0) return -1;
    return (long)st.f_type;
}

void cvigil_name_thread(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

int cvigil_malloc_trim(void) { return malloc_trim(0); }

int cvigil_malloc_arena_max(int n) { return mallopt(M_ARENA_MAX, n); }
