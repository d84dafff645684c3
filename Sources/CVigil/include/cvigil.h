#ifndef CVIGIL_H
#define CVIGIL_H

#include <sys/types.h>
#include <signal.h>
#include "cvigil_http.h"

/// pidfd_open(2). Returns a file descriptor or -1 with errno set.
int cvigil_pidfd_open(pid_t pid);

/// pidfd_send_signal(2) without siginfo. Returns 0 or -1 with errno set.
int cvigil_pidfd_send_signal(int pidfd, int sig);

/// waitid(P_PIDFD, pidfd, WEXITED|WNOHANG). Returns 1 when reaped (status filled as for waitpid),
/// 0 when still running, -1 with errno set (ECHILD when the process is not our child).
int cvigil_pidfd_reap(int pidfd, int *status);

/// posix_spawn with POSIX_SPAWN_SETSID (or SETPGROUP when new_session is 0 and new_group is 1),
/// default signal dispositions, an empty signal mask, stdin from /dev/null, stdout and stderr to
/// out_fd (or inherited when out_fd < 0), all other descriptors closed, and an optional working
/// directory. Returns 0 and sets *pid, or an errno value.
int cvigil_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 int out_fd, const char *cwd, int new_session, int new_group);

/// Installs handlers for the given signals that write the signal number as one byte to write_fd
/// (a non-blocking pipe). Async-signal-safe. Returns 0 or -1 with errno set.
int cvigil_install_signal_pipe(int write_fd, const int *signals, int count);

/// Ignores SIGPIPE (long-running processes must not die from a closed socket or pipe).
void cvigil_ignore_sigpipe(void);

/// Reads the calling thread's errno.
int cvigil_errno(void);

/// ioctl(fd, EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH): simulates a power cut.
int cvigil_ext4_shutdown(int fd);



/// statfs(2) f_type of the file system holding path, or -1 with errno set.
long cvigil_fs_type(const char *path);

/// Names the calling thread (pthread_setname_np; the kernel keeps 15 bytes).
void cvigil_name_thread(const char *name);

/// malloc_trim(0): gives the free pages of every malloc arena back to the kernel. 1 when any
/// memory was released.
int cvigil_malloc_trim(void);

/// mallopt(M_ARENA_MAX, n): at most n malloc arenas from now on. 1 on success.
int cvigil_malloc_arena_max(int n);

#endif
