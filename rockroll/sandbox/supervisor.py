"""The monitor's supervisor: one process per sandbox, on the host, that sees every program the
sandbox starts and every connection it tries, at the moment it happens.

The sandbox's init puts all its processes under a seccomp filter whose watched calls (execve,
execveat, connect, and sends that name an address) wait for this process's answer (see
init.c). For each one it reads what the call points at (the program and its argv, the
destination), writes an event to the sandbox's audit log, checks the rules (`watch.py`) and
answers: let the call go on, refuse it, or kill the command that made it.

Started with the launcher it belongs to (parked ahead of time, so a sandbox does not wait for
a Python start), it reads its settings as one JSON line on stdin when the sandbox is launched,
takes the listener from the init and serves until the sandbox is gone. SIGHUP makes it read
the rules again from the settings' `watch` file. Standard library only, run by path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

if __package__:
    from rockroll.sandbox import notify, procinfo, watch
    from rockroll.sandbox.egress import Policy, PolicyError
    from rockroll.sandbox.filewatch import FileWatch
    from rockroll.sandbox.resolver import Resolver, enter_netns, enter_netns_fd
else:  # run by path: the package's imports would cost a second at each sandbox start
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # after the standard library
    import notify  # type: ignore[no-redef]
    import procinfo  # type: ignore[no-redef]
    import watch  # type: ignore[no-redef]
    from egress import Policy, PolicyError  # type: ignore[no-redef]
    from filewatch import FileWatch  # type: ignore[no-redef]
    from resolver import Resolver, enter_netns, enter_netns_fd  # type: ignore[no-redef]

HANDSHAKE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
PROXIES = 16  # connections made at once on the sandbox's behalf
STRONG = ("refuse", "kill", "end")
CPU_EVERY = 1.0  # seconds between samples of the CPU time of the programs started


class Supervisor:
    def __init__(self, config: dict[str, Any], listener: int, launcher: int, init: int) -> None:
        self.sandbox = str(config.get("sandbox", ""))
        self.policy = Policy.from_setting(config.get("network", "none"))
        self.watch_file = config.get("watch")
        self.rules = watch.Rules(config.get("rules") or [])
        self.listener = listener
        self.launcher = launcher
        self.init = init
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.log = os.open(config["log"], flags, 0o600)
        self.programs: dict[int, list[str]] = {}  # host pid -> argv of its last exec
        # (host pid, start time) of a command -> the argv it started with: its later execs
        # (bash -c runs its last program in place) do not change where it came from
        self.origins: dict[tuple[int, str], list[str]] = {}
        # host pid -> (its start time, the file it was started from, as the sandbox sees it)
        self.started: dict[int, tuple[str, str]] = {}
        self.cpu_next: dict[tuple[int, str], float] = {}  # CPU seconds of its next cpu event
        self.sampled = 0.0
        self.installed: set[int] = set()  # inodes of the sockets we connected for the sandbox
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.proxies = threading.BoundedSemaphore(PROXIES)
        self.resolver: Resolver | None = None
        self.files: FileWatch | None = None
        try:
            self.files = FileWatch(f"/proc/{init}/root")
        except OSError as e:
            self.note(error=f"file watch: {e}")
        self.start_resolver()

    # -- events ---------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        os.write(self.log, (json.dumps(event, ensure_ascii=False) + "\n").encode())

    def note(self, **fields: Any) -> None:
        """An event of the monitor's own: a settings change taken, or what it cannot do."""
        self.emit({"time": time.time(), "kind": "monitor", "sandbox": self.sandbox} | fields)

    def _process(self, pid: int) -> dict[str, Any]:
        """Who a call comes from: its pid and parent as the sandbox sees them, and the command
        (the init's child) it belongs to, whose argv becomes the event's `origin`."""
        try:
            status = procinfo.status(pid)
        except OSError:
            return {"pid": 0}
        info: dict[str, Any] = {"pid": procinfo.inner_pid(status), "ppid": 0}
        ppid = int(status.get("PPid", "0"))
        root = pid
        for depth in range(256):  # up to the init's child, each status read once
            if not ppid or ppid == self.init:
                info["ppid"] = info["ppid"] or (1 if ppid == self.init else 0)
                break
            root = ppid
            try:
                parent = procinfo.status(ppid)
            except OSError:
                break
            if depth == 0:
                info["ppid"] = procinfo.inner_pid(parent)
            ppid = int(parent.get("PPid", "0"))
        info["command_pid"] = root
        return info

    def _base(self, kind: str, pid: int) -> dict[str, Any]:
        event: dict[str, Any] = {"time": round(time.time(), 6), "kind": kind}
        event["sandbox"] = self.sandbox
        event.update(self._process(pid))
        root = event.pop("command_pid")
        key = (root, procinfo.start_time(root))
        origin = self.origins.get(key) or self.programs.get(root) or procinfo.cmdline(root)
        if root in self.programs and key not in self.origins:
            self.origins[key] = origin
            if len(self.origins) > 4096:
                self.origins.pop(next(iter(self.origins)))
        event["origin"] = origin
        return event

    # -- calls ----------------------------------------------------------------------------

    def handle(self, call: notify.Call) -> None:
        try:
            if call.name in ("execve", "execveat"):
                self.on_exec(call)
            elif call.name == "connect":
                self.on_connect(call)
            elif call.name in ("sendto", "sendmsg", "sendmmsg"):
                self.on_send(call)
            else:
                notify.allow(self.listener, call)
        except (OSError, ValueError, struct.error):
            # The caller vanished mid-read, or its memory was not readable: let the kernel
            # answer the call as it would (a dead caller needs no answer).
            notify.allow(self.listener, call)

    def on_exec(self, call: notify.Call) -> None:
        path_at, argv_at = (call.args[0], call.args[1]) if call.name == "execve" else call.args[1:3]
        with notify.Memory(call.pid) as mem:
            path = mem.string(path_at).decode("utf-8", "surrogateescape")
            argv = mem.argv(argv_at)
        self.programs[call.pid] = argv  # a command's own exec is its origin
        if len(self.programs) > 4096:
            self.programs.pop(next(iter(self.programs)))
        event = self._base("exec", call.pid)
        try:
            cwd = os.readlink(f"/proc/{call.pid}/cwd")
        except OSError:
            cwd = ""
        event.update(path=path, argv=argv, cwd=cwd)
        if argv and os.path.basename(argv[0]) in procinfo.SHELLS:
            event["stdio_socket"] = procinfo.stdio_socket(call.pid)
        action = self.judge(event)
        if self.rules.cpu_first is not None and action not in STRONG:
            self.started[call.pid] = (
                procinfo.start_time(call.pid), os.path.normpath(os.path.join(cwd, path))
            )  # fmt: skip
            if len(self.started) > 4096:
                self.started.pop(next(iter(self.started)))
        self.answer(call, action, errno.EPERM, event)

    def on_connect(self, call: notify.Call) -> None:
        fd, addr_at, size = call.args[0], call.args[1], call.args[2]
        with notify.Memory(call.pid) as mem:
            dest = procinfo.sockaddr(mem.read(addr_at, min(size, 128)))
        if dest is None:  # unix sockets, AF_UNSPEC (disconnect) and the rest: not network
            notify.allow(self.listener, call)
            return
        self.connection(call, fd, dest, errno.ECONNREFUSED)

    def on_send(self, call: notify.Call) -> None:
        fd = call.args[0]
        names: list[bytes] = []
        with notify.Memory(call.pid) as mem:
            if call.name == "sendto":
                names.append(mem.read(call.args[4], min(call.args[5], 128)))
            else:
                count = 1 if call.name == "sendmsg" else min(call.args[2], 64)
                stride = 56 if call.name == "sendmsg" else 64  # msghdr, mmsghdr
                for i in range(count):
                    at, size = struct.unpack("=QI", mem.read(call.args[1] + i * stride, 12))
                    if at:
                        names.append(mem.read(at, min(size, 128)))
        dests = {d for d in map(procinfo.sockaddr, names) if d is not None}
        if not dests:
            notify.allow(self.listener, call)
            return
        for dest in sorted(dests)[:-1]:  # all but one recorded; the last one decides the call
            self.connection(call, fd, dest, errno.ECONNREFUSED, answer=False, sending=True)
        self.connection(call, fd, sorted(dests)[-1], errno.ECONNREFUSED, sending=True)

    def connection(
        self,
        call: notify.Call,
        fd: int,
        dest: tuple[str, str, int],
        err: int,
        answer: bool = True,
        sending: bool = False,
    ) -> None:
        """Record a connection attempt and answer it: let it go on inside the sandbox's own
        network, make it on the sandbox's behalf when the policy allows it out, or refuse."""
        family, address, port = dest
        event = self._base("connect", call.pid)
        event["argv"] = self.programs.get(call.pid) or procinfo.cmdline(call.pid)
        proto, inode = self._socket(call.pid, fd)
        event.update(family=family, proto=proto, address=address, port=port)
        refusal = errno.EACCES
        proxy = False
        if inode in self.installed:  # ours, connected out already: it goes nowhere else
            event["verdict"], event["reason"] = "refused", "already connected"
            refusal = errno.EISCONN
        elif (inside := self._inside(call.pid, address)) or self.policy.mode == "full":
            event["verdict"], event["route"] = "allowed", "inside" if inside else "out"
        else:
            ok, why = self.policy.decide(address, port)
            event["reason"] = why
            if self.policy.mode == "none":
                event["reason"], refusal = "network none: no route", errno.ENETUNREACH
            if ok and sending:
                ok, event["reason"] = False, f"{why}, but only through a connected socket"
                refusal = errno.EDESTADDRREQ
            proxy = ok and proto in ("tcp", "udp")
            event["verdict"] = "allowed" if proxy else "refused"
        action = self.judge(event)
        if not answer:
            self.emit(event)
        elif action in STRONG:
            self.answer(call, action, err, event)
        elif event["verdict"] == "refused":
            self.emit(event)
            notify.refuse(self.listener, call, refusal)
        elif proxy:
            self.proxies.acquire()
            threading.Thread(
                target=self._proxy, args=(call, fd, address, port, proto, event), daemon=True
            ).start()
        else:
            self.answer(call, action, err, event)

    def _inside(self, pid: int, address: str) -> bool:
        """Whether `address` is in the sandbox's own network: its loopback, or a private
        network it is plugged into."""
        return procinfo.loopback(address) or procinfo.routed(pid, address)

    def _proxy(
        self, call: notify.Call, fd: int, address: str, port: int, proto: str, event: dict
    ) -> None:
        """Connect to address:port from the policy's network and put the connected socket in
        the caller's place: the kernel never reads the caller's memory again, so what was
        checked is what is reached."""
        sock = None
        try:
            flags = notify.fd_flags(call.pid, fd)
            enter = self.policy.via
            if enter:
                enter_netns(enter)
            else:
                enter_netns_fd(self.own_netns)
            v6 = ":" in address
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind)
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((address, port))
            sock.setblocking(not flags & os.O_NONBLOCK)
            self.installed.add(os.fstat(sock.fileno()).st_ino)
            notify.install_fd(self.listener, call, sock.fileno(), fd, bool(flags & os.O_CLOEXEC))
            notify.succeed(self.listener, call, 0)
            event["via"], event["route"] = enter or "host", "out"
        except OSError as e:
            code = e.errno or errno.ETIMEDOUT
            event["verdict"], event["reason"] = "failed", os.strerror(code)
            with contextlib.suppress(OSError):
                notify.refuse(self.listener, call, code)
        finally:
            if sock is not None:
                sock.close()
            self.emit(event)
            self.proxies.release()

    def _socket(self, pid: int, fd: int) -> tuple[str, int | None]:
        """The protocol of process `pid`'s socket `fd` ("tcp", "udp") and its inode."""
        try:
            copy = notify.take_fd(pid, fd)
        except OSError:
            return "", None
        try:
            inode = os.fstat(copy).st_ino
            with socket.socket(fileno=copy) as sock:
                kind = sock.type
                sock.detach()
        except OSError:
            return "", None
        finally:
            os.close(copy)
        names = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}
        return names.get(kind, str(int(kind))), inode

    # -- verdicts -------------------------------------------------------------------------

    def judge(self, event: dict[str, Any]) -> str | None:
        matched = self.rules.check(event)
        if matched:
            event["rules"] = [
                {"id": r.id, "class": r.klass, "severity": r.severity, "action": r.action}
                for r in matched
            ]
        action = watch.strongest(matched)
        if action is not None:
            event["action"] = action
        return action

    def answer(
        self, call: notify.Call, action: str | None, err: int, event: dict[str, Any]
    ) -> None:
        if action in STRONG and not notify.still_waiting(self.listener, call):
            return  # the caller died after its memory was read: its pid may be another's now
        if action in STRONG:
            event["verdict"] = "refused" if action == "refuse" else "killed"
        else:
            event.setdefault("verdict", "allowed")
        self.emit(event)
        if action in ("kill", "end"):
            self.kill_command(call.pid)
        if action in STRONG:
            notify.refuse(self.listener, call, err)
        else:
            notify.allow(self.listener, call)

    def sample_cpu(self) -> None:
        """A cpu event for each program started here whose CPU time has reached the least that
        a cpu rule asks for, then again each time it doubles."""
        self.sampled = time.monotonic()
        first = self.rules.cpu_first
        if first is None:
            return
        now = procinfo.uptime()
        for pid, (start, path) in list(self.started.items()):
            used = procinfo.cpu_time(pid, start, now)
            if used is None:  # gone, or its pid is another process's now
                del self.started[pid]
                continue
            seconds, share = used
            key = (pid, start)
            if seconds < self.cpu_next.get(key, first):
                continue
            self.cpu_next[key] = max(seconds, first) * 2
            event = self._base("cpu", pid)
            argv = self.programs.get(pid, [])
            event.update(path=path, argv=argv, cpu_seconds=round(seconds, 2))
            event["cpu_share"] = round(share, 3)
            action = self.judge(event)
            event.setdefault("verdict", "killed" if action in ("kill", "end") else "allowed")
            self.emit(event)
            if action in ("kill", "end"):
                self.kill_command(pid)
        if len(self.cpu_next) > 4096:
            live = {(pid, start) for pid, (start, _) in self.started.items()}
            self.cpu_next = {k: v for k, v in self.cpu_next.items() if k in live}

    def kill_command(self, pid: int) -> None:
        """SIGKILL the command that `pid` belongs to: the init's child above it and all below."""
        root = self._process(pid).get("command_pid", pid)
        for victim in [root, *procinfo.descendants(root)]:
            try:
                os.kill(victim, signal.SIGKILL)
            except OSError:
                continue

    def start_resolver(self) -> None:
        """Serve names inside the sandbox's network once a policy needs them (not before: a
        task's own DNS server may want port 53)."""
        if self.resolver is not None or self.policy.mode != "policy":
            return
        try:
            self.resolver = Resolver(lambda: self.policy, f"/proc/{self.init}/ns/net", self.emit)
            self.resolver.start()
        except OSError as e:
            self.note(error=f"resolver: {e}")

    def reload_rules(self) -> None:
        HANGUPS.clear()
        if not self.watch_file:
            return
        try:
            with open(self.watch_file) as fh:
                data = json.load(fh)
            self.rules = watch.Rules(data.get("rules") or [])
            if "network" in data:
                policy = Policy.from_setting(data["network"])
                policy.learned = self.policy.learned  # names resolved stay resolved
                self.policy = policy
                self.start_resolver()
            self.note(network=data.get("network"), generation=data.get("generation"))
        except (OSError, ValueError, PolicyError) as e:
            self.note(error=f"{self.watch_file}: {e}")

    # -- loop -----------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)  # main() counts the hang-ups; this wakes the loop for them
        if HANGUPS:  # a change asked for while it was starting
            self.reload_rules()
        gone = os.pidfd_open(self.launcher)
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "call")
        sel.register(gone, selectors.EVENT_READ, "gone")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        if self.files is not None:
            sel.register(self.files.fd, selectors.EVENT_READ, "files")
        while True:
            sampling = self.rules.cpu_first is not None
            if sampling and time.monotonic() - self.sampled >= CPU_EVERY:
                self.sample_cpu()
            for key, mask in sel.select(CPU_EVERY if sampling else None):
                if key.data == "gone":
                    return
                if key.data == "files" and self.files is not None:
                    for event in self.files.read():
                        event["sandbox"] = self.sandbox
                        self.judge(event)
                        self.emit(event)
                    continue
                if key.data == "signal":
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 64)
                    if HANGUPS:
                        self.reload_rules()
                    continue
                if mask & selectors.EVENT_READ:
                    call = notify.receive(self.listener)
                    if call is not None:
                        self.handle(call)


def _handshake(monitor: socket.socket, launcher: int) -> tuple[int, int]:
    """Take the listener from the init: read its fd number, copy it, say so."""
    monitor.settimeout(HANDSHAKE_TIMEOUT)
    line = b""
    while not line.endswith(b"\n"):
        chunk = monitor.recv(32)
        if not chunk:
            raise OSError(errno.EPIPE, "the sandbox's init closed the monitor channel")
        line += chunk
    init = procinfo.init_pid(launcher)
    listener = notify.take_fd(init, int(line))
    monitor.sendall(b"k")
    monitor.close()
    return listener, init


HANGUPS: list[int] = []


def main(argv: list[str]) -> int:
    # A change of settings (SIGHUP) must never end the supervisor, whenever it comes.
    signal.signal(signal.SIGHUP, lambda signum, _frame: HANGUPS.append(signum))
    monitor_fd = int(argv[argv.index("--monitor-fd") + 1])
    launcher = int(argv[argv.index("--launcher") + 1])
    monitor = socket.socket(fileno=monitor_fd)
    line = sys.stdin.readline()
    if not line.strip():  # the sandbox is started without a monitor, or not at all
        return 0
    config = json.loads(line)
    try:
        listener, init = _handshake(monitor, launcher)
    except (OSError, ValueError) as e:
        print(f"monitor of sandbox {config.get('sandbox')}: {e}", file=sys.stderr)
        return 1
    Supervisor(config, listener, launcher, init).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
