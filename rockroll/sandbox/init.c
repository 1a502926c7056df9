/*
 * rockroll-init: the main process of a rockroll sandbox.
 *
 * `serve` mode listens on a unix stream socket and forks one command per connection, so every
 * command inherits the sandbox's namespaces, seccomp filter, capabilities and cgroups while the
 * (possibly huge) host process never forks. The wire protocol is documented in protocol.py.
 * The init runs from a sealed memfd (no host file backs /proc/1/exe) and makes itself
 * non-dumpable, so a process of the sandbox can neither open /proc/1/mem, /proc/1/fd or
 * /proc/1/exe nor take its fds: nobody inside can take over the command channel. Each command is
 * a child subreaper, so everything it starts stays its descendant while it runs, and a timeout
 * kills the whole tree (a `setsid` grandchild included), not just its process group.
 *
 * With --monitor-fd N the init first puts every process of the sandbox under a seccomp filter
 * that reports execve, execveat, connect, sendmsg, sendmmsg and sendto with an address to a
 * supervisor on the host (seccomp user notification): it writes the listener's fd number to N,
 * waits until the supervisor has taken the listener (pidfd_getfd) and closes its own copy, so
 * the supervisor holds the only one. If the supervisor goes, those calls fail with ENOSYS: the
 * sandbox cannot run anything unwatched.
 *
 * `launch` and `mount` modes (launch.c) prepare a sandbox before its bwrap runs: cgroups, the
 * user namespace and the idmapped root.
 *
 * Build: cc -O2 -static -Wall -Wextra -o rockroll-init init.c launch.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAYLOAD (16u << 20)
#define MAX_LINE 4096
#define READ_CHUNK 65536
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_GROUPS 256
#define KILL_ROUNDS 200

int launch_main(int argc, char **argv);
int mount_main(int argc, char **argv);

enum { ST_REQUEST, ST_STARTING, ST_RUNNING };
enum { STEP_CHDIR, STEP_EXEC, STEP_SETUP, STEP_USER };
static const char *const step_names[] = {"chdir", "exec", "setup", "user"};

struct conn {
    int fd;         /* client socket */
    int state;
    char *buf;      /* received bytes not yet consumed */
    size_t len, cap;
    int fds[3];     /* stdin, stdout, stderr received with the request */
    int nfds;
    int bad_fds;    /* more fds than expected, or truncated control data */
    pid_t pid;      /* the command (and its process group), 0 before fork */
    int errfd;      /* read end of the exec-status pipe while the child has not exec'd */
    short revents, err_revents;
    int dead;
};

/* Who a command runs as: uid -1 keeps the init's (root of the sandbox). */
struct user {
    long uid, gid, ngroups;
    gid_t groups[MAX_GROUPS];
};

static struct conn **conns;
static size_t nconns, capconns;
static struct rlimit orig_nofile;
static int accept_paused;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fputs("rockroll-init: out of memory\n", stderr);
        exit(1);
    }
    return q;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("rockroll-init: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* ---- connections ---------------------------------------------------------------------- */

static void add_conn(int fd) {
    if (nconns == capconns) {
        capconns = capconns ? capconns * 2 : 64;
        conns = xrealloc(conns, capconns * sizeof *conns);
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->errfd = -1;
    conns[nconns++] = c;
}

static void close_received(struct conn *c) {
    for (int i = 0; i < c->nfds; i++)
        close(c->fds[i]);
    c->nfds = 0;
}

/* Close everything the connection holds; a still-running child is reaped later as unknown. */
static void finish(struct conn *c) {
    if (c->dead)
        return;
    close(c->fd);
    if (c->errfd >= 0)
        close(c->errfd);
    close_received(c);
    free(c->buf);
    c->buf = NULL;
    c->dead = 1;
}

/* Replies are a few short lines per connection, far below the socket buffer: never EAGAIN. */
static void reply(struct conn *c, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof line)
        n = sizeof line - 1;
    ssize_t r = send(c->fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

static void reply_error(struct conn *c, int err, const char *step) {
    reply(c, "E %d %s %s\n", err, step, strerror(err));
    finish(c);
}

static void kill_group(pid_t pid, int sig) {
    if (kill(-pid, sig) < 0)
        kill(pid, sig); /* the child may not have called setsid() yet */
}

static int signal_descendants(int sig, pid_t root, const long *exempt, long nexempt,
                              unsigned long long since, long last);

static size_t tree_of(pid_t root, pid_t **out, int *running);

/* SIGKILL a command and everything it started. The command is a child subreaper, so orphans
 * of its tree are re-parented to it while it lives. Freeze the tree first (SIGSTOP, round after
 * round until nothing in it runs: a stopped process cannot fork), then kill the command itself
 * (so that it is reported killed by SIGKILL, not as a shell that saw its child killed) and then
 * every process of the frozen tree, by the pids listed last. */
static void kill_tree(pid_t pid) {
    pid_t *tree = NULL;
    size_t n = 0;
    kill(pid, SIGSTOP);
    for (int round = 0; round < KILL_ROUNDS; round++) {
        free(tree);
        int running = 0;
        n = tree_of(pid, &tree, &running);
        if (!running)
            break;
        for (size_t i = 0; i < n; i++)
            kill(tree[i], SIGSTOP);
    }
    kill_group(pid, SIGKILL);
    for (size_t i = 0; i < n; i++)
        kill(tree[i], SIGKILL);
    free(tree);
    /* anything that escaped the freeze (a process stuck in the kernel through every round) */
    for (int round = 0; round < KILL_ROUNDS; round++)
        if (signal_descendants(SIGKILL, pid, NULL, 0, 0, 0) == 0)
            break;
}

/* The host closed or reset the connection: it gave up on the command, so kill it. */
static void host_gone(struct conn *c) {
    if (c->pid > 0)
        kill_tree(c->pid);
    finish(c);
}

/* ---- exec ------------------------------------------------------------------------------ */

static void child_fail(int errw, int err, int step) {
    int msg[2] = {err, step};
    ssize_t r = write(errw, msg, sizeof msg);
    (void)r;
    _exit(127);
}

/* Every fd of the init is CLOEXEC, so after dup2 only 0, 1 and 2 survive the exec. */
static void exec_child(struct conn *c, int errw, const char *cwd, char **argv, char **envp,
                       char *path, const struct user *user) {
    setsid();
    /* Orphans of the command's tree come back to it (preserved across exec), so a timeout can
     * find and kill all of them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &dfl, NULL);
    setrlimit(RLIMIT_NOFILE, &orig_nofile);
    if (user->uid >= 0 && (setgroups((size_t)user->ngroups, user->groups) ||
                           setresgid((gid_t)user->gid, (gid_t)user->gid, (gid_t)user->gid) ||
                           setresuid((uid_t)user->uid, (uid_t)user->uid, (uid_t)user->uid)))
        child_fail(errw, errno, STEP_USER);
    if (chdir(cwd) < 0)
        child_fail(errw, errno, STEP_CHDIR);
    for (int i = 0; i < 3; i++)
        if (dup2(c->fds[i], i) < 0)
            child_fail(errw, errno, STEP_SETUP);
    char *search_env[] = {path, NULL};
    environ = search_env; /* execvpe searches the PATH of environ, envp goes to the command */
    execvpe(argv[0], argv, envp);
    child_fail(errw, errno, STEP_EXEC);
}

static char *next_field(char **p, char *end) {
    if (*p >= end)
        return NULL;
    char *s = *p, *z = memchr(s, 0, end - s);
    if (!z)
        return NULL;
    *p = z + 1;
    return s;
}

/* Collect `count` fields into a NULL-terminated array (pointing into the request buffer). */
static char **take_fields(char **p, char *end, long count) {
    char **v = malloc((count + 1) * sizeof *v);
    if (!v)
        return NULL;
    for (long i = 0; i < count; i++)
        if (!(v[i] = next_field(p, end))) {
            free(v);
            return NULL;
        }
    v[count] = NULL;
    return v;
}

static void start_exec(struct conn *c, char *p, char *end) {
    long argc, envc;
    char *cwd = next_field(&p, end), *f = next_field(&p, end);
    char **argv = NULL, **envp = NULL;
    if (!cwd || !f || parse_long(f, 1, MAX_PAYLOAD, &argc) < 0 ||
        !(argv = take_fields(&p, end, argc)) || !(f = next_field(&p, end)) ||
        parse_long(f, 0, MAX_PAYLOAD, &envc) < 0 || !(envp = take_fields(&p, end, envc))) {
        free(argv);
        reply_error(c, EINVAL, "request");
        return;
    }
    struct user user = {.uid = -1};
    char *f2 = next_field(&p, end);
    if (f2 && !strcmp(f2, "U")) {
        char *fu = next_field(&p, end), *fg = next_field(&p, end), *fn = next_field(&p, end);
        int bad = !fu || !fg || !fn || parse_long(fu, 0, 0xFFFFFFFEL, &user.uid) < 0 ||
                  parse_long(fg, 0, 0xFFFFFFFEL, &user.gid) < 0 ||
                  parse_long(fn, 0, MAX_GROUPS, &user.ngroups) < 0;
        for (long i = 0; !bad && i < user.ngroups; i++) {
            long g = 0;
            char *fgi = next_field(&p, end);
            bad = !fgi || parse_long(fgi, 0, 0xFFFFFFFEL, &g) < 0;
            user.groups[i] = (gid_t)g;
        }
        if (bad) {
            free(argv);
            free(envp);
            reply_error(c, EINVAL, "request");
            return;
        }
    }
    char *path = DEFAULT_PATH;
    for (long i = 0; i < envc; i++)
        if (!strncmp(envp[i], "PATH=", 5))
            path = envp[i];
    int ep[2], err = 0;
    pid_t pid = -1;
    if (pipe2(ep, O_CLOEXEC) == 0) {
        pid = fork();
        if (pid == 0)
            exec_child(c, ep[1], cwd, argv, envp, path, &user);
        err = errno;
        close(ep[1]);
        if (pid < 0)
            close(ep[0]);
    } else {
        err = errno;
    }
    free(argv);
    free(envp);
    close_received(c);
    if (pid < 0) {
        reply_error(c, err, "fork");
        return;
    }
    fcntl(ep[0], F_SETFL, O_NONBLOCK);
    c->errfd = ep[0];
    c->pid = pid;
    c->state = ST_STARTING;
}

/* The exec-status pipe: EOF means exec succeeded, data means chdir/exec failed. */
static void resolve_start(struct conn *c) {
    int msg[2];
    ssize_t n = read(c->errfd, msg, sizeof msg);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    close(c->errfd);
    c->errfd = -1;
    if (n == (ssize_t)sizeof msg && msg[1] >= 0 && msg[1] <= STEP_USER) {
        reply_error(c, msg[0], step_names[msg[1]]);
        return;
    }
    if (n > 0) {
        reply_error(c, EIO, "exec");
        return;
    }
    c->state = ST_RUNNING;
    reply(c, "P %d\n", (int)c->pid);
}

/* ---- signal descendants ---------------------------------------------------------------- */

struct proc {
    pid_t pid, ppid, pgrp;
    unsigned long long start; /* clock ticks after boot */
    int mark;
    char state;
};

/* Live processes of the sandbox (zombies are dead already: signalling them "succeeds"). */
static size_t list_procs(struct proc **out) {
    size_t n = 0, cap = 0;
    struct proc *v = NULL;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long pid;
        if (parse_long(e->d_name, 1, INT32_MAX, &pid) < 0)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (r <= 0)
            continue;
        buf[r] = 0;
        char *rp = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
        char state;
        int ppid, pgrp;
        unsigned long long start;
        if (!rp || sscanf(rp + 1,
                          " %c %d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                          "%*d %*d %llu",
                          &state, &ppid, &pgrp, &start) != 4)
            continue;
        if (state == 'Z' || state == 'X')
            continue;
        if (n == cap)
            v = xrealloc(v, (cap = cap ? cap * 2 : 256) * sizeof *v);
        v[n++] = (struct proc){(pid_t)pid, ppid, pgrp, start, 0, state};
    }
    if (d)
        closedir(d);
    *out = v;
    return n;
}

static void mark_descendants(struct proc *v, size_t n, pid_t root) {
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i].mark || v[i].pid == root)
                continue;
            int parent_in = v[i].ppid == root;
            for (size_t j = 0; j < n && !parent_in; j++)
                parent_in = v[j].mark && v[j].pid == v[i].ppid;
            if (parent_in)
                v[i].mark = changed = 1;
        }
    }
}

/* Pids of the live descendants of `root`; *running: how many of them are not stopped. */
static size_t tree_of(pid_t root, pid_t **out, int *running) {
    struct proc *v;
    size_t n = list_procs(&v), k = 0;
    mark_descendants(v, n, root);
    *out = xrealloc(NULL, (n + 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) {
        if (!v[i].mark)
            continue;
        (*out)[k++] = v[i].pid;
        *running += v[i].state != 'T';
    }
    free(v);
    return k;
}

/* Signal every live descendant of `root` (not root itself) whose process group is not exempt
 * and that started at or after `since` (clock ticks after boot; 0: any); the count. A process
 * that started within the tick `since` falls in is older than the mark when its pid is at most
 * `last` (the namespace's last pid at the mark; 0: none is). */
static int signal_descendants(int sig, pid_t root, const long *exempt, long nexempt,
                              unsigned long long since, long last) {
    struct proc *v;
    size_t n = list_procs(&v);
    mark_descendants(v, n, root);
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        int older = v[i].start < since || (v[i].start == since && v[i].pid <= last);
        int skip = !v[i].mark || older;
        for (long k = 0; k < nexempt && !skip; k++)
            skip = v[i].pgrp == exempt[k];
        if (!skip && kill(v[i].pid, sig) == 0)
            count++;
    }
    free(v);
    return count;
}

static void do_signal(struct conn *c, char *p, char *end) {
    long sig, root, count;
    char *f1 = next_field(&p, end), *f2 = next_field(&p, end), *f3 = next_field(&p, end);
    if (!f1 || !f2 || !f3 || parse_long(f1, 0, 64, &sig) < 0 ||
        parse_long(f2, 1, INT32_MAX, &root) < 0 || parse_long(f3, 0, 1 << 20, &count) < 0) {
        reply_error(c, EINVAL, "request");
        return;
    }
    long *exempt = calloc(count + 1, sizeof *exempt);
    for (long i = 0; exempt && i < count; i++) {
        char *f = next_field(&p, end);
        if (!f || parse_long(f, 0, INT32_MAX, &exempt[i]) < 0) {
            free(exempt);
            reply_error(c, EINVAL, "request");
            return;
        }
    }
    if (!exempt) {
        reply_error(c, ENOMEM, "request");
        return;
    }
    unsigned long long since = 0;
    long last = 0;
    char *fs = next_field(&p, end), *fl = next_field(&p, end); /* optional, after the groups */
    if (fs)
        since = strtoull(fs, NULL, 10);
    if (fl && parse_long(fl, 0, INT32_MAX, &last) < 0)
        last = 0;
    reply(c, "OK %d\n", signal_descendants((int)sig, (pid_t)root, exempt, count, since, last));
    free(exempt);
    finish(c);
}

/* A mark in process history: the clock tick now (after boot, as /proc/PID/stat counts) and the
 * pid namespace's last allocated pid, so that a later request can tell older processes from
 * newer ones even when both started within the same tick. */
static void do_mark(struct conn *c) {
    struct timespec now;
    clock_gettime(CLOCK_BOOTTIME, &now);
    long hz = sysconf(_SC_CLK_TCK);
    unsigned long long ticks =
        (unsigned long long)now.tv_sec * hz + (unsigned long long)now.tv_nsec * hz / 1000000000ULL;
    long last = 0;
    FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "r");
    if (f) {
        if (fscanf(f, "%ld", &last) != 1)
            last = 0;
        fclose(f);
    }
    reply(c, "OK %llu %ld\n", ticks, last);
    finish(c);
}

static int signal_fd = -1;
static void reap(int sfd);

/* SIGKILL every process of the sandbox but the init (kill(-1) from a pid namespace's init
 * spares only the init) and wait until they are gone; reply how many were left alive. */
static void do_kill_all(struct conn *c) {
    struct timespec pause = {0, 200000}, now, until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 5; /* a process stuck in uninterruptible sleep cannot die: report it */
    int left = 0;
    for (;;) {
        if (kill(-1, SIGKILL) < 0 && errno == ESRCH)
            break;
        reap(signal_fd);
        struct proc *v;
        left = (int)list_procs(&v) - 1; /* ourselves */
        free(v);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (left <= 0 || now.tv_sec > until.tv_sec ||
            (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
            break;
        nanosleep(&pause, NULL);
    }
    reap(signal_fd);
    reply(c, "OK %d\n", left > 0 ? left : 0);
    finish(c);
}

/* ---- reading from clients -------------------------------------------------------------- */

static void dispatch(struct conn *c, uint32_t plen) {
    char *p = c->buf + 4, *end = p + plen;
    char *op = next_field(&p, end);
    if (op && !strcmp(op, "D")) {
        close_received(c);
        do_signal(c, p, end);
    } else if (op && !strcmp(op, "M")) {
        close_received(c);
        do_mark(c);
    } else if (op && !strcmp(op, "A")) {
        close_received(c);
        do_kill_all(c);
    } else if (op && !strcmp(op, "X") && c->nfds == 3 && !c->bad_fds) {
        start_exec(c, p, end);
    } else {
        reply_error(c, EINVAL, "request");
    }
    if (c->dead)
        return;
    /* Keep only what followed the request (control lines) in a small buffer. */
    size_t rest = c->len - 4 - plen;
    if (rest > MAX_LINE)
        rest = 0;
    char *small = xrealloc(NULL, MAX_LINE);
    memcpy(small, c->buf + 4 + plen, rest);
    free(c->buf);
    c->buf = small;
    c->cap = MAX_LINE;
    c->len = rest;
}

static void control_lines(struct conn *c) {
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        *nl = 0;
        long sig;
        if (c->buf[0] == 'K' && c->buf[1] == ' ' && parse_long(c->buf + 2, 0, 64, &sig) == 0 &&
            c->pid > 0) {
            if (sig == SIGKILL)
                kill_tree(c->pid);
            else
                kill_group(c->pid, (int)sig);
        }
        size_t used = nl + 1 - c->buf;
        memmove(c->buf, nl + 1, c->len - used);
        c->len -= used;
    }
    if (c->len == c->cap)
        c->len = 0; /* an overlong line: drop it */
}

static void take_fds(struct conn *c, struct msghdr *msg) {
    if (msg->msg_flags & MSG_CTRUNC)
        c->bad_fds = 1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int *fds = (int *)CMSG_DATA(cm);
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            if (c->nfds < 3 && c->state == ST_REQUEST) {
                c->fds[c->nfds++] = fds[i];
            } else {
                close(fds[i]);
                c->bad_fds = 1;
            }
        }
    }
}

/* Returns 1 when the request is complete and was dispatched, -1 on a fatal client error. */
static int request_progress(struct conn *c) {
    if (c->len < 4)
        return 0;
    unsigned char *h = (unsigned char *)c->buf;
    uint32_t plen = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
    if (plen > MAX_PAYLOAD) {
        reply_error(c, E2BIG, "request");
        return -1;
    }
    if (c->len < 4 + (size_t)plen)
        return 0;
    dispatch(c, plen);
    return c->dead ? -1 : 1;
}

static void grow_request_buf(struct conn *c) {
    if (c->cap - c->len >= READ_CHUNK)
        return;
    size_t want = c->cap ? c->cap * 2 : READ_CHUNK;
    if (want < c->len + READ_CHUNK)
        want = c->len + READ_CHUNK;
    c->buf = xrealloc(c->buf, want);
    c->cap = want;
}

static void client_readable(struct conn *c) {
    for (;;) {
        if (c->state == ST_REQUEST)
            grow_request_buf(c);
        char cbuf[CMSG_SPACE(sizeof(int) * 8)];
        struct iovec iov = {c->buf + c->len, c->cap - c->len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof cbuf;
        ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n > 0)
            take_fds(c, &msg);
        if (n <= 0) {
            host_gone(c);
            return;
        }
        c->len += n;
        if (c->state == ST_REQUEST && request_progress(c) < 0)
            return;
        if (c->state != ST_REQUEST)
            control_lines(c);
    }
}

/* ---- children -------------------------------------------------------------------------- */

static struct conn *conn_of(pid_t pid) {
    for (size_t i = 0; i < nconns; i++)
        if (!conns[i]->dead && conns[i]->pid == pid)
            return conns[i];
    return NULL;
}

static void reap(int sfd) {
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == sizeof si)
        ;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        accept_paused = 0;
        struct conn *c = conn_of(pid);
        if (!c)
            continue; /* an orphan reparented to us, or a command whose host left */
        if (c->errfd >= 0)
            resolve_start(c); /* the child is gone, so the pipe is at EOF or holds its error */
        if (c->dead)
            continue;
        int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        int code = sig ? 128 + sig : WEXITSTATUS(st);
        c->pid = 0;
        reply(c, "X %d %d\n", code, sig);
        finish(c);
    }
}

/* ---- setup and event loop -------------------------------------------------------------- */

static void accept_clients(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            add_conn(fd);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM:
            continue;
        case EAGAIN:
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            accept_paused = 1; /* resume once a connection or child frees something */
            return;
        default:
            die("accept on the listening socket: %s", strerror(errno));
        }
    }
}

static void sweep(void) {
    size_t j = 0;
    for (size_t i = 0; i < nconns; i++) {
        if (conns[i]->dead) {
            free(conns[i]);
            accept_paused = 0;
        } else {
            conns[j++] = conns[i];
        }
    }
    nconns = j;
}

static void serve_loop(int lfd, int sfd) {
    struct pollfd *pfds = NULL;
    struct conn **owner = NULL;
    size_t cap = 0;
    for (;;) {
        if (cap < 2 + 2 * nconns) {
            cap = 2 * (2 + 2 * nconns);
            pfds = xrealloc(pfds, cap * sizeof *pfds);
            owner = xrealloc(owner, cap * sizeof *owner);
        }
        pfds[0] = (struct pollfd){sfd, POLLIN, 0};
        pfds[1] = (struct pollfd){accept_paused ? -1 : lfd, POLLIN, 0};
        size_t n = 2;
        for (size_t i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            c->revents = c->err_revents = 0;
            owner[n] = c;
            pfds[n++] = (struct pollfd){c->fd, POLLIN, 0};
            if (c->errfd >= 0) {
                owner[n] = c;
                pfds[n++] = (struct pollfd){c->errfd, POLLIN, 0};
            }
        }
        if (poll(pfds, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        for (size_t i = 2; i < n; i++) {
            if (pfds[i].fd == owner[i]->fd)
                owner[i]->revents = pfds[i].revents;
            else
                owner[i]->err_revents = pfds[i].revents;
        }
        for (size_t i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            if (c->err_revents && !c->dead && c->errfd >= 0)
                resolve_start(c);
            if (c->revents && !c->dead)
                client_readable(c);
        }
        if (pfds[0].revents)
            reap(sfd);
        if (pfds[1].revents & (POLLERR | POLLNVAL))
            die("the listening socket failed");
        if (pfds[1].revents & POLLIN)
            accept_clients(lfd);
        sweep();
    }
}

static void ensure_std_fds(void) {
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
            die("cannot open /dev/null for fd %d", fd);
}

/* Nothing of the host may leak into the sandbox: close inherited fds above 2 but two kept. */
static void close_inherited(int keep, int keep2) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        for (int fd = 3; fd < 65536; fd++)
            if (fd != keep && fd != keep2)
                close(fd);
        return;
    }
    int *fds = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long fd;
        if (parse_long(e->d_name, 3, INT32_MAX, &fd) < 0 || fd == keep || fd == keep2 ||
            fd == dirfd(d))
            continue;
        if (n == cap)
            fds = xrealloc(fds, (cap = cap ? cap * 2 : 16) * sizeof *fds);
        fds[n++] = (int)fd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
}

static int listen_on_path(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        die("listen path too long (max %zu bytes): %s", sizeof addr.sun_path - 1, path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    unlink(path);
    mode_t old = umask(077); /* no window in which others could connect */
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind %s: %s", path, strerror(errno));
    umask(old);
    if (chmod(path, 0600) < 0)
        die("chmod %s: %s", path, strerror(errno));
    if (listen(fd, 4096) < 0)
        die("listen %s: %s", path, strerror(errno));
    return fd;
}

static int setup_signals(void) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_NAME, "rockroll-init");
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ign, NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd: %s", strerror(errno));
    return sfd;
}

/* Only the capabilities we hold may ever be held by a command: drop the rest from the bounding
 * set (exec as root could otherwise reach them, were no_new_privs ever lifted). */
static void limit_bounding_set(void) {
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data))
        die("capget: %s", strerror(errno));
    for (int cap = 0; cap < 64; cap++) {
        int held = (data[cap / 32].permitted >> (cap % 32)) & 1;
        if (!held && prctl(PR_CAPBSET_READ, cap) == 1 && prctl(PR_CAPBSET_DROP, cap) < 0)
            die("dropping capability %d from the bounding set: %s", cap, strerror(errno));
    }
}

/* Thousands of concurrent commands need fds; children get the original limit back. */
static void raise_nofile(void) {
    getrlimit(RLIMIT_NOFILE, &orig_nofile);
    struct rlimit r = orig_nofile;
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}


#if defined(__x86_64__)
#define MONITOR_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define MONITOR_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define MONITOR_ARCH AUDIT_ARCH_RISCV64
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif
#define ARG_HI(i) (ARG_LO(i) ^ 4)
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

/* The monitor's filter: other architectures' calls pass here (the sandbox's own filter kills
 * them); the watched calls go to the supervisor; sendto only when it names an address. */
static int install_monitor(void) {
#ifndef MONITOR_ARCH
    errno = ENOSYS;
    return -1;
#else
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MONITOR_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 10, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execveat, 9, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_connect, 8, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendmsg, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendmmsg, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendto, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(4)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(4)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (fd < 0 && errno == EINVAL) /* before Linux 5.19 */
        fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                          SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    return fd;
#endif
}

/* Hand the listener to the supervisor on `mfd`: its number, then wait for the word that it
 * has a copy. write/read/poll are not watched, so this cannot wait on itself. */
static void start_monitor(long mfd) {
    int listener = install_monitor();
    if (listener < 0)
        die("the monitor's seccomp filter: %s (a kernel with seccomp user notification, "
            "Linux 5.5 or later, is needed)", strerror(errno));
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", listener);
    if (write((int)mfd, line, (size_t)n) != n)
        die("writing to monitor fd %ld: %s", mfd, strerror(errno));
    struct pollfd p = {.fd = (int)mfd, .events = POLLIN};
    char ack = 0;
    if (poll(&p, 1, 30000) != 1 || read((int)mfd, &ack, 1) != 1 || ack != 'k')
        die("the sandbox's monitor did not take its listener");
    close(listener);
    close((int)mfd);
}

static int serve(int argc, char **argv) {
    long lfd = -1, ready = -1, mfd = -1;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("option %s needs a value", a);
        if (!strcmp(a, "--listen-fd") && parse_long(v, 0, INT32_MAX, &lfd) == 0)
            i++;
        else if (!strcmp(a, "--listen-path"))
            path = argv[++i];
        else if (!strcmp(a, "--ready-fd") && parse_long(v, 0, INT32_MAX, &ready) == 0)
            i++;
        else if (!strcmp(a, "--monitor-fd") && parse_long(v, 0, INT32_MAX, &mfd) == 0)
            i++;
        else
            die("bad serve option %s %s", a, v);
    }
    if ((lfd >= 0) == (path != NULL))
        die("serve needs exactly one of --listen-fd N or --listen-path PATH");
    if (mfd >= 0)
        start_monitor(mfd);
    if (path)
        lfd = listen_on_path(path);
    else if (fcntl(lfd, F_SETFD, FD_CLOEXEC) < 0)
        die("listen fd %ld: %s", lfd, strerror(errno));
    if (fcntl(lfd, F_SETFL, O_NONBLOCK) < 0)
        die("listen fd %ld: %s", lfd, strerror(errno));
    close_inherited(lfd, ready);
    /* Nobody in the sandbox may read our memory, open our fds or exe, or take them by pidfd:
     * non-dumpable makes /proc/1/{mem,fd,exe,environ} need CAP_SYS_PTRACE, which it lacks. */
    if (prctl(PR_SET_DUMPABLE, 0) < 0)
        die("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
    limit_bounding_set();
    raise_nofile();
    int sfd = setup_signals();
    signal_fd = sfd;
    if (ready >= 0) {
        if (write(ready, "R\n", 2) != 2)
            die("writing to ready fd %ld: %s", ready, strerror(errno));
        close(ready);
    }
    serve_loop(lfd, sfd);
    return 0;
}

int main(int argc, char **argv) {
    ensure_std_fds();
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return serve(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "launch"))
        return launch_main(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "mount"))
        return mount_main(argc - 2, argv + 2);
    fputs("usage: rockroll-init serve [--listen-fd N | --listen-path PATH] [--ready-fd N] "
          "[--monitor-fd N]\n"
          "       rockroll-init launch [--wait-fd N] [--joined-fd N] [--userns BASE COUNT] "
          "--cgroup-procs FILE [...] [-- PROG ARGS...]\n"
          "       rockroll-init mount --userns BASE COUNT --root N LAYER... dir|disk SRC MNT "
          "TARGET\n",
          stderr);
    return 2;
}
