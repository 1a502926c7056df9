#!/bin/busybox sh
# /init of the cgroup v2 test VM (see runner.py). Stage 1 runs from the busybox initramfs: it
# loads the modules, mounts the host's root read-only over 9p at /newroot with writable /tmp,
# /run, a rockroll home on an ext4 disk and cgroup2 alone at /sys/fs/cgroup, then switch_root's
# into it (user namespaces cannot be made from a chroot). Stage 2 runs there as pid 1, with the
# host's own tools: it runs pytest on the tests named in /vm.env, writes the results to the
# writable "out" share and powers off. The console (ttyS0) carries the progress.
set -a
if [ "$1" != stage2 ]; then
    /bin/busybox mkdir -p /bin /proc /sys /dev /newroot
    /bin/busybox --install -s /bin
    PATH=/bin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    . /vm.env
    echo "[vm] init started after $(cut -d' ' -f1 /proc/uptime)s of guest uptime; kernel $(uname -r)"
    for m in $(cat /modules/order); do
        insmod "/modules/$m.ko" || echo "[vm] insmod $m failed"
    done
    R=/newroot
    opts9p=trans=virtio,version=9p2000.L,msize=512000
    fail() {
        echo "[vm] $*"
        poweroff -f
    }
    mount -t 9p -o "$opts9p,ro,cache=loose" hostroot $R || fail "cannot mount the host root"
    # Held aside while /tmp and /run get their tmpfs, and put back: the checkout may live there.
    mkdir /hold && mount -o bind $R$REPO /hold || fail "no $REPO on the host root"
    mount -t proc proc $R/proc
    mount -t sysfs sysfs $R/sys
    mount -t devtmpfs devtmpfs $R/dev
    mkdir -p $R/dev/pts $R/dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
    mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
    mount -t tmpfs -o mode=1777 tmpfs $R/tmp
    mount -t tmpfs -o mode=755 tmpfs $R/run
    # The unified hierarchy and nothing else, with the options systemd gives it on Debian 12.
    mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup ||
        fail "cannot mount cgroup2"
    mkdir -p $R/run/vm/out $R/run/vm/disk $R/run/vm/user
    mount -t 9p -o "$opts9p" out $R/run/vm/out || fail "cannot mount the out share"
    mount -t ext4 -o noinit_itable,nobarrier /dev/vda $R/run/vm/disk ||
        fail "cannot mount the disk"
    mkdir -p $R$REPO 2>/dev/null # only where a tmpfs hid it; elsewhere it is there, read-only
    mount --move /hold $R$REPO || fail "cannot put $REPO back"
    # The checkout's sources as they were at boot, whatever is edited on the host meanwhile.
    for name in $SNAPSHOT; do
        mount -o bind $R/run/vm/disk/src/$name $R$REPO/$name || fail "cannot bind $name"
    done
    umount /proc /sys /dev
    exec switch_root $R "$BUSYBOX" sh "$REPO/tests/vm/init.sh" stage2
fi

# Stage 2: pid 1 in the host's tree, with the host's tools.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
O=/run/vm/out
say() { echo "[vm] $*"; }
uptime() { cut -d' ' -f1 /proc/uptime; }
# What a systemd host does: the tests run in a leaf cgroup, not in the root one.
mkdir /sys/fs/cgroup/ci.scope && echo $$ >/sys/fs/cgroup/ci.scope/cgroup.procs
cat /proc/self/cgroup >$O/proc_self_cgroup
cat /sys/fs/cgroup/cgroup.controllers >$O/cgroup_controllers 2>&1
cat /proc/self/mountinfo >$O/mountinfo
cat /proc/filesystems >$O/filesystems
uname -r >$O/uname
nproc >$O/nproc
uptime >$O/boot_seconds
echo 1 >/proc/sys/kernel/printk # kernel messages go to $O/dmesg, not between the test lines

if [ -n "$GUEST_CMD" ]; then
    set -- /bin/sh -c "$GUEST_CMD"
    say "running in $REPO at $(uptime)s: $GUEST_CMD"
else
    # shellcheck disable=SC2086  # the lists are meant to split into words
    set -- "$PYTHON" -m pytest $PYTEST_ARGS -v -rfEs --color=no --junitxml=$O/junit.xml $TESTS
    say "running pytest in $REPO at $(uptime)s: $TESTS"
fi
# shellcheck disable=SC2086
(cd "$REPO" && exec env -i PATH="$PATH" HOME=/run/vm/user ROCKROLL_HOME=/run/vm/disk/home TMPDIR=/tmp \
    LANG=C.UTF-8 TERM=dumb PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 CI="$CI" ROCKROLL_SHARED="$SHARED" $GUEST_ENV "$@")
rc=$?
uptime >$O/end_seconds
dmesg >$O/dmesg
echo "$rc" >$O/status
say "exit status $rc; powering off"
sync
umount $O
"$BUSYBOX" poweroff -f
