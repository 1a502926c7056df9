/*
 * rockroll-init `launch` and `mount` modes: what the host does before a sandbox's bwrap runs.
 *
 * `launch` writes its own pid into cgroup.procs files and then execs a program, so the host
 * places bwrap into cgroups without a pre-exec hook in the (possibly huge) host process. With
 * --wait-fd it parks after joining the cgroups and reads the command from that fd: the kernel's
 * first move of a task into a v1 cgroup can wait for an RCU grace period (5-30 ms), so the host
 * parks launchers ahead of time and a sandbox starts without that wait.
 *
 * With --userns BASE COUNT the launcher also makes, while parked, the sandbox's user namespace:
 * ids 0..COUNT-1 inside are host ids BASE..BASE+COUNT-1, so no process of the sandbox ever holds
 * a host id below BASE (host root is not mapped at all). A command read from the fd may start
 * with `--root N LAYER... KIND SRC MNT TARGET`: the launcher then, in a new private mount
 * namespace, mounts the sandbox's root at TARGET, an overlay of the read-only LAYERs (top first)
 * and a writable layer holding upper/ and work/: the directory SRC (KIND `dir`), or the ext4
 * filesystem image SRC (KIND `disk`), attached to a loop device that frees itself once the
 * sandbox's last process is gone. Every layer is an idmapped mount shifted by BASE, so files stay
 * root-owned on disk (images and snapshots are ordinary trees) and appear root-owned inside.
 * The overlay names
 * its layers by short paths relative to a private tmpfs at MNT, so /proc/self/mountinfo inside
 * the sandbox shows no host path. The launcher then enters the user namespace as its root and
 * execs the program (bwrap), whose namespaces are then owned by the sandbox's user namespace.
 *
 * With --park-disk IMAGE MNT, the parked launcher already attaches and mounts the ext4 image at
 * MNT (in its private mount namespace): a `--root` whose KIND is `parked` then uses it.
 *
 * `mount --userns BASE COUNT --root ...` does the same mounting in the caller's own mount
 * namespace and exits (for backends that run the container themselves, like podman).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/loop.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct mount_attr_v0 {
    unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

#define MAX_LAYERS 500

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "rockroll-init launch: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
            strerror(errno));
    return -1;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t len = (ssize_t)strlen(text);
    if (fd < 0 || write(fd, text, len) != len) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        errno = err;
        return fail("cannot write", path);
    }
    close(fd);
    return 0;
}

/* A new user namespace mapping 0..count-1 onto base..base+count-1; returns an fd to it. A child
 * creates it and waits while the parent (host root) writes its maps; the fd keeps it alive. */
static int make_userns(long base, long count) {
    int go[2], ready[2];
    if (pipe2(go, O_CLOEXEC) || pipe2(ready, O_CLOEXEC))
        return fail("pipe", NULL);
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork", NULL);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        char c = unshare(CLONE_NEWUSER) == 0 ? 'U' : 'E';
        if (write(ready[1], &c, 1) != 1 || c != 'U')
            _exit(1);
        ssize_t r = read(go[0], &c, 1); /* EOF: the parent is done with our /proc files */
        (void)r;
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char c = 0, path[64], map[64];
    int fd = -1;
    if (read(ready[0], &c, 1) != 1 || c != 'U') {
        errno = c == 'E' ? EPERM : ECHILD;
        fail("cannot create a user namespace", NULL);
        goto out;
    }
    snprintf(map, sizeof map, "0 %ld %ld\n", base, count);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    if (write_file(path, map) < 0)
        goto out;
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    if (write_file(path, map) < 0)
        goto out;
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail("cannot open", path);
out:
    close(go[1]);
    close(ready[0]);
    waitpid(pid, NULL, 0);
    return fd;
}

/* Mount an idmapped clone of `src` (shifted by the user namespace `ns`) on `dst`. */
static int idmap_mount(const char *src, const char *dst, int ns) {
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (fd < 0)
        return fail("cannot clone the mount of", src);
    struct mount_attr_v0 attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (unsigned)ns};
    int rc = 0;
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr))
        rc = fail("cannot idmap (needs Linux 5.19 and a filesystem that supports it)", src);
    else if (syscall(SYS_move_mount, fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH))
        rc = fail("cannot attach the idmapped mount of", src);
    close(fd);
    return rc;
}

/* Raise every permitted capability into the effective set (setfsuid to non-zero drops the
 * file-related ones, which the overlay's copy-up needs: it records the mounter's credentials). */
static int raise_caps(void) {
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data))
        return fail("capget", NULL);
    data[0].effective = data[0].permitted;
    data[1].effective = data[1].permitted;
    if (syscall(SYS_capset, &head, data))
        return fail("capset", NULL);
    return 0;
}

/* Attach the filesystem image `image` to a free loop device (autoclear: it detaches itself when
 * the filesystem is unmounted) and mount it on `dst`. */
static int mount_disk(const char *image, const char *dst) {
    int file = open(image, O_RDWR | O_CLOEXEC | O_DIRECT);
    int direct = file >= 0;
    if (file < 0 && errno == EINVAL) /* a filesystem without O_DIRECT (tmpfs) */
        file = open(image, O_RDWR | O_CLOEXEC);
    if (file < 0)
        return fail("cannot open the disk image", image);
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC), dev = -1, rc = -1;
    char path[32];
    if (ctl < 0) {
        fail("cannot open /dev/loop-control (disk limits need loop devices)", NULL);
        goto out;
    }
    for (int attempt = 0; attempt < 100 && dev < 0; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            fail("no free loop device", NULL);
            goto out;
        }
        snprintf(path, sizeof path, "/dev/loop%d", n);
        dev = open(path, O_RDWR | O_CLOEXEC);
        if (dev < 0) {
            fail("cannot open", path);
            goto out;
        }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (unsigned)file;
        cfg.block_size = 4096;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (direct ? LO_FLAGS_DIRECT_IO : 0);
        if (ioctl(dev, LOOP_CONFIGURE, &cfg) == 0)
            break;
        int err = errno;
        close(dev);
        dev = -1;
        if (err != EBUSY) { /* EBUSY: another launcher took this device first */
            errno = err;
            fail("cannot attach the disk image to", path);
            goto out;
        }
    }
    if (dev < 0) {
        errno = EBUSY;
        fail("no loop device could be attached", NULL);
        goto out;
    }
    if (mount(path, dst, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "") < 0) {
        fail("cannot mount the sandbox's disk from", path);
        goto out;
    }
    rc = 0;
out:
    if (dev >= 0)
        close(dev); /* the mount holds the device now; autoclear detaches it after the mount */
    if (ctl >= 0)
        close(ctl);
    close(file);
    return rc;
}

/* The writable layer: a private tmpfs at `mnt` holding `u`, an idmapped mount of the directory
 * `src` (KIND dir) or of the ext4 image `src` mounted at `d` (KIND disk). */
static int prepare_writable(const char *kind, const char *src, const char *mnt, int ns) {
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (mount("rockroll", mnt, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=64k") ||
        chdir(mnt)) {
        close(cwd);
        return fail("cannot set up the layer directory", mnt);
    }
    const char *fsdir = src;
    if (!strcmp(kind, "disk")) {
        if (mkdir("d", 0700) || mount_disk(src, "d"))
            rc = -1;
        fsdir = "d";
    }
    if (rc == 0 && (mkdir("u", 0700) || idmap_mount(fsdir, "u", ns)))
        rc = fail("cannot prepare the writable layer", src);
    if (fchdir(cwd) < 0)
        rc = fail("fchdir", NULL);
    close(cwd);
    return rc;
}

/* argv: N LAYER... KIND SRC MNT TARGET (KIND `parked`: the writable layer is ready at MNT);
 * returns how many arguments it used, or -1. */
static int mount_root(char **argv, int argc, int ns, long base) {
    long n = argc > 0 ? strtol(argv[0], NULL, 10) : -1;
    const char *kind = n >= 1 && argc >= n + 5 ? argv[n + 1] : "";
    if (n < 1 || n > MAX_LAYERS || argc < n + 5 ||
        (strcmp(kind, "dir") && strcmp(kind, "disk") && strcmp(kind, "parked"))) {
        errno = EINVAL;
        fail("bad --root arguments", NULL);
        return -1;
    }
    char **layers = argv + 1;
    const char *src = argv[n + 2], *mnt = argv[n + 3], *target = argv[n + 4];
    if (strcmp(kind, "parked") && prepare_writable(kind, src, mnt, ns) < 0)
        return -1;
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (chdir(mnt))
        return fail("cannot enter the layer directory", mnt);
    size_t cap = 64 + 16 * (size_t)n;
    char *opts = malloc(cap), name[16];
    if (!opts)
        return fail("malloc", NULL);
    size_t len = (size_t)snprintf(opts, cap, "lowerdir=");
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%ld", i);
        if (mkdir(name, 0700) || idmap_mount(layers[i], name, ns))
            return fail("cannot prepare layer", layers[i]);
        len += (size_t)snprintf(opts + len, cap - len, "%s%s", i ? ":" : "", name);
    }
    snprintf(opts + len, cap - len, ",upperdir=u/upper,workdir=u/work");
    /* The overlay acts on its upper layer with the mounter's credentials: make those the
     * sandbox root's host ids, which the idmapped upper layer can represent on disk. */
    int rc = 0;
    setfsgid((gid_t)base);
    setfsuid((uid_t)base);
    if (raise_caps() || mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, opts))
        rc = fail("cannot mount the overlay at", target);
    setfsuid(0);
    setfsgid(0);
    free(opts);
    if (fchdir(cwd) < 0)
        rc = fail("fchdir", NULL);
    close(cwd);
    return rc < 0 ? -1 : (int)n + 5;
}

/* Become root of the user namespace `ns` (host id BASE), keeping its full capabilities there. */
static int enter_userns(int ns) {
    if (setns(ns, CLONE_NEWUSER))
        return fail("cannot enter the sandbox's user namespace", NULL);
    if (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0))
        return fail("cannot become root of the sandbox's user namespace", NULL);
    return 0;
}

/* Read NUL-terminated arguments from fd until EOF; NULL on error, *count 0 when cancelled. */
static char **read_argv(int fd, int *count) {
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            return NULL;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return NULL;
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    *count = 0;
    for (size_t i = 0; i < len; i++)
        *count += buf[i] == '\0';
    char **args = calloc((size_t)*count + 1, sizeof *args);
    if (!args)
        return NULL;
    for (size_t i = 0, k = 0; i < len && k < (size_t)*count; k++) {
        args[k] = buf + i;
        i += strlen(buf + i) + 1;
    }
    return args;
}

static int parse_userns(char **argv, long *base, long *count) {
    char *e1, *e2;
    *base = strtol(argv[0], &e1, 10);
    *count = strtol(argv[1], &e2, 10);
    if (*e1 || *e2 || *base < 1 || *count < 1 || *base + *count > 0xFFFFFFFFL) {
        fputs("rockroll-init: --userns needs BASE COUNT (positive, within 32 bits)\n", stderr);
        return -1;
    }
    return 0;
}

int launch_main(int argc, char **argv) {
    int i = 0, wait_fd = -1, joined_fd = -1, ns = -1, private_ns = 0;
    long base = 0, count = 0;
    const char *park_disk = NULL, *park_mnt = NULL;
    char pid[32];
    int plen = snprintf(pid, sizeof pid, "%d", (int)getpid());
    for (; i + 1 < argc && argv[i][0] == '-' && strcmp(argv[i], "--cgroup-procs") &&
           strcmp(argv[i], "--");
         i += 2) {
        if (!strcmp(argv[i], "--wait-fd"))
            wait_fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--joined-fd"))
            joined_fd = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--userns") && i + 2 < argc) {
            if (parse_userns(argv + i + 1, &base, &count))
                return 125;
            i++;
        } else if (!strcmp(argv[i], "--park-disk") && i + 2 < argc) {
            park_disk = argv[i + 1];
            park_mnt = argv[i + 2];
            i++;
        }
    }
    for (; i + 1 < argc && !strcmp(argv[i], "--cgroup-procs"); i += 2) {
        const char *file = argv[i + 1];
        int fd = open(file, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, pid, plen) != plen || close(fd) < 0) {
            fprintf(stderr, "rockroll-init launch: cannot write pid to %s: %s\n", file,
                    strerror(errno));
            return 125;
        }
    }
    if (count > 0 && (ns = make_userns(base, count)) < 0)
        return 125;
    if (park_disk) {
        /* While parked, attach and mount the default disk too (loop devices and mounts take a
         * few milliseconds): a sandbox that asks for that disk finds its writable layer ready. */
        if (ns < 0 || unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            prepare_writable("disk", park_disk, park_mnt, ns) < 0) {
            fail("cannot prepare the parked disk", park_disk);
            return 125;
        }
        private_ns = 1;
    }
    char **command = argv + i + 1;
    if (joined_fd >= 0 && write(joined_fd, "J", 1) != 1) {
        fprintf(stderr, "rockroll-init launch: cannot report joining: %s\n", strerror(errno));
        return 125;
    }
    if (wait_fd >= 0) {
        /* Parked: the cgroups are joined ahead of time; the command arrives when needed. */
        int n = 0;
        command = read_argv(wait_fd, &n);
        close(wait_fd);
        if (!command) {
            fprintf(stderr, "rockroll-init launch: cannot read command: %s\n", strerror(errno));
            return 125;
        }
        if (n == 0)
            return 0;
        if (n > 1 && !strcmp(command[0], "--root")) {
            if (ns < 0) {
                fputs("rockroll-init launch: --root needs --userns\n", stderr);
                return 125;
            }
            /* The root lives in a mount namespace of its own: the host's mount table stays
             * small (each new bwrap copies it) and the mounts vanish with the sandbox. */
            if (!private_ns &&
                (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))) {
                fail("cannot make a private mount namespace", NULL);
                return 125;
            }
            long layers = n > 1 ? strtol(command[1], NULL, 10) : 0;
            if (park_disk && layers > 0 && layers + 2 < n && strcmp(command[layers + 2], "parked")) {
                /* another writable layer was asked for: let the parked disk go */
                if (umount2(park_mnt, MNT_DETACH)) {
                    fail("cannot release the parked disk at", park_mnt);
                    return 125;
                }
            }
            int used = mount_root(command + 1, n - 1, ns, base);
            if (used < 0)
                return 125;
            command += 1 + used;
        }
    } else if (i >= argc || strcmp(argv[i], "--") || i + 1 >= argc) {
        fputs("usage: rockroll-init launch [--wait-fd N] [--userns BASE COUNT] [--park-disk IMAGE "
              "MNT] --cgroup-procs FILE [...] [-- PROG ARGS...]\n",
              stderr);
        return 125;
    }
    if (ns >= 0) {
        if (enter_userns(ns))
            return 125;
        close(ns);
    }
    execvp(command[0], command);
    fprintf(stderr, "rockroll-init launch: cannot exec %s: %s\n", command[0], strerror(errno));
    return 125;
}

int mount_main(int argc, char **argv) {
    long base = 0, count = 0;
    if (argc < 4 || strcmp(argv[0], "--userns") || parse_userns(argv + 1, &base, &count) ||
        strcmp(argv[3], "--root")) {
        fputs("usage: rockroll-init mount --userns BASE COUNT --root N LAYER... dir|disk SRC "
              "MNT TARGET\n",
              stderr);
        return 2;
    }
    int ns = make_userns(base, count);
    if (ns < 0 || mount_root(argv + 4, argc - 4, ns, base) < 0)
        return 125;
    return 0;
}
