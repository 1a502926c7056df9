"""`rockroll <noun> <verb>`: the single command-line entry point."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from rockroll.sandbox.errors import SandboxError

if TYPE_CHECKING:
    from rockroll.agent.launch import Launch

DB_HELP = "state database of the sandbox server (default $ROCKROLL_HOME/service.db)"
out = Console()
err = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, rest = words[:cut], words[cut + 1 :]
    args = parser.parse_args(words)
    if rest is not None:
        if not hasattr(args, "command"):
            parser.error("'--' introduces a command, as in `rockroll sandbox exec ID -- CMD`")
        args.command = [*args.command, *rest]
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SandboxError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rockroll", description=__doc__)
    nouns = parser.add_subparsers(title="commands", metavar="<noun> <verb>")
    _image_commands(nouns.add_parser("image", help="build, list and remove base images"))
    _sandbox_commands(nouns.add_parser("sandbox", help="create and use sandboxes"))
    _bench_commands(nouns.add_parser("bench", help="run an agent over a task set, and report"))
    _agent_commands(nouns.add_parser("agent", help="run the agent harness headless"))
    _model_commands(nouns.add_parser("model", help="serve a local model over HTTP"))
    _token_commands(nouns.add_parser("token", help="tokens of the sandbox server"))
    serve = nouns.add_parser("serve", help="serve sandboxes over HTTP (auth, state, TTLs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8321)
    serve.add_argument("--db", help=DB_HELP)
    serve.add_argument(
        "--keep", action="store_true", help="leave sandboxes running at shutdown (adopted next)"
    )
    serve.add_argument("--max-upload", default="256m", help="largest file or tree upload")
    serve.add_argument("--max-download", default="256m", help="largest file read (GET /files)")
    serve.add_argument("--max-tree", default="1g", help="largest tree read (GET /tree)")
    serve.add_argument(
        "--public-metrics",
        action="store_true",
        help="serve /metrics and the API documents without a token",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's head before it is disconnected",
    )
    serve.set_defaults(func=_serve)
    train = nouns.add_parser("train", help="train a local policy with RL (IPA) from a config")
    train.add_argument("config", help="YAML config (see rockroll/train/config.py)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--out", help="output folder (overrides the config's `out`)")
    train.add_argument("--steps", type=int, help="RL steps (overrides the config's `steps`)")
    train.set_defaults(func=_train)
    demo = nouns.add_parser("demo", help="evaluate, train with IPA and evaluate SmolLM2 on CPU")
    demo.add_argument("--tour", action="store_true", help="a tour of the sandbox runtime instead")
    demo.add_argument("--out", help="output folder (default runs/demo-TIME)")
    demo.add_argument("--steps", type=int, help="IPA steps (default 6)")
    demo.set_defaults(func=_demo)
    return parser


def _verbs(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return parser.add_subparsers(title="verbs", metavar="<verb>")


def _add(
    verbs: argparse._SubParsersAction, name: str, func: Callable, help: str
) -> argparse.ArgumentParser:
    sub = verbs.add_parser(name, help=help, description=help)
    sub.set_defaults(func=func)
    return sub


# -- images ------------------------------------------------------------------------------------
def _image_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    build = _add(verbs, "build", _image_build, "build a Debian base image with debootstrap")
    build.add_argument("name", nargs="?", default="base")
    build.add_argument("--suite", default="bookworm", help="Debian release (default bookworm)")
    build.add_argument("--mirror", help="Debian mirror URL (default: the host's)")
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")
    _add(verbs, "ls", _image_ls, "list built images")
    rm = _add(verbs, "rm", _image_rm, "remove an image")
    rm.add_argument("name")


def _image_build(args: argparse.Namespace) -> int:
    from rockroll.sandbox.errors import ImageNotFound
    from rockroll.sandbox.images import build_image, get_image

    if not args.force:
        try:
            image = get_image(args.name)
            out.print(f"image [bold]{args.name}[/] is already built at {image.path}")
            return 0
        except ImageNotFound:
            pass
    with err.status(f"building image {args.name} (a few minutes the first time)"):
        build_image(args.name, suite=args.suite, mirror=args.mirror, force=args.force, log=err.log)
    return 0


def _image_ls(args: argparse.Namespace) -> int:
    from rockroll.sandbox.images import list_images

    table = Table("name", "suite", "size", "built", "path")
    for image in list_images():
        meta = image.meta
        table.add_row(
            image.name,
            str(meta.get("suite", "?")),
            f"{meta.get('size_bytes', 0) / 2**20:.0f} MiB",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.get("created", 0))),
            str(image.path),
        )
    out.print(table)
    return 0


def _image_rm(args: argparse.Namespace) -> int:
    from rockroll.sandbox.images import remove_image

    remove_image(args.name)
    out.print(f"removed image {args.name}")
    return 0


# -- sandboxes ---------------------------------------------------------------------------------
def _sandbox_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    create = _add(verbs, "create", _sb_create, "start a sandbox that outlives this command")
    create.add_argument("--image", default="base", help="image name or snapshot id")
    create.add_argument("--memory", default="2g", help="memory limit, e.g. 512m (default 2g)")
    create.add_argument("--cpus", type=float, default=1.0, help="CPU quota in cores")
    create.add_argument("--pids", type=int, default=1024, help="process limit")
    create.add_argument(
        "--disk", default="10g", help="what it may write, e.g. 20g; 'none': no limit"
    )
    create.add_argument("--inodes", type=int, help="files it may create (default: 1 per 16 KiB)")
    create.add_argument("--network", choices=["none", "full"], default="none")
    create.add_argument("--env", action="append", default=[], metavar="K=V")
    create.add_argument("--workdir", default="/")
    create.add_argument("--ttl", type=float, default=3600.0, help="idle seconds before removal")
    create.add_argument("--backend", choices=["bwrap", "podman"], default="bwrap")
    ex = _add(verbs, "exec", _sb_exec, "run a command in a sandbox; exits with its exit code")
    ex.add_argument("id")
    ex.add_argument("--timeout", type=float, default=600.0)
    ex.add_argument("--cwd")
    ex.add_argument("--env", action="append", default=[], metavar="K=V")
    ex.add_argument("--user", help="run as this user of the sandbox (name[:group])")
    ex.add_argument("command", nargs="*", help="the command, after --")
    shell = _add(verbs, "shell", _sb_shell, "a persistent bash in a sandbox, line by line")
    shell.add_argument("id")
    ls = _add(verbs, "ls", _sb_ls, "list sandboxes")
    ls.add_argument("--json", action="store_true")
    rm = _add(verbs, "rm", _sb_rm, "stop and remove sandboxes")
    rm.add_argument("ids", nargs="*")
    rm.add_argument("--all", action="store_true")
    _add(verbs, "gc", _sb_gc, "remove what crashed or killed processes left behind")
    snap = _add(verbs, "snapshot", _sb_snapshot, "freeze a sandbox's files into a snapshot")
    snap.add_argument("id")


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SandboxError(f"--env {pair!r} must look like NAME=value")
        env[key] = value
    return env


def _sb_create(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox, server_settings

    # Through a server (ROCKROLL_SERVER) every sandbox outlives the client: detaching is the
    # server's business, and asking for it there is refused.
    local = server_settings(None, None) is None
    sb = Sandbox.create(
        args.image,
        memory=args.memory,
        cpus=args.cpus,
        pids=args.pids,
        disk=None if args.disk.lower() == "none" else args.disk,
        inodes=args.inodes,
        network=args.network,
        env=_env_pairs(args.env),
        workdir=args.workdir,
        ttl=args.ttl,
        backend=args.backend,
        detached=local,
    )
    out.print(sb.id, highlight=False)
    return 0


def _sb_exec(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    command = args.command
    if not command:
        raise SandboxError("no command given: rockroll sandbox exec ID -- CMD ...")
    sb = Sandbox.connect(args.id)
    streams = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(stream: str, chunk: bytes) -> None:
        streams[stream].write(chunk)
        streams[stream].flush()

    cmd = command[0] if len(command) == 1 else command
    result = sb.exec(
        cmd,
        timeout=args.timeout,
        cwd=args.cwd,
        env=_env_pairs(args.env),
        on_output=show,
        user=args.user,
    )
    if result.truncated:
        err.print("[yellow]output was longer than the cap; head and tail shown[/]")
    if result.timed_out:
        err.print(f"[red]timed out after {args.timeout:g} s; the command was killed[/]")
        return 124
    return result.exit_code


def _sb_shell(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    sb = Sandbox.connect(args.id)
    session = sb.session()
    err.print(f"bash in sandbox {sb.id}; one command per line, Ctrl-D to leave")
    try:
        while True:
            try:
                line = input("$ ")
            except EOFError:
                return 0
            if line.strip():
                res = session.run(line)
                sys.stdout.write(res.stdout)
                sys.stderr.write(res.stderr)
                if res.exit_code:
                    err.print(f"[dim]exit {res.exit_code}[/]")
    finally:
        session.close()


def _sb_ls(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    records = local_runtime().list()
    if args.json:
        print(json.dumps([r.model_dump() for r in records], indent=1))
        return 0
    table = Table("id", "image", "backend", "status", "age", "memory", "network", "owner")
    for rec in records:
        age = time.time() - rec.created
        table.add_row(
            rec.id,
            rec.image,
            rec.spec.backend,
            rec.status,
            f"{age:.0f}s",
            f"{(rec.spec.memory or 0) / 2**20:.0f}M",
            rec.spec.network,
            "detached" if rec.spec.detached else str(rec.owner_pid),
        )
    out.print(table)
    return 0


def _sb_rm(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    runtime = local_runtime()
    ids = [r.id for r in runtime.list()] if args.all else args.ids
    if not ids:
        raise SandboxError("name sandboxes to remove, or pass --all")
    for sandbox_id in ids:
        runtime.get(sandbox_id)
        runtime.close(sandbox_id)
        out.print(f"removed {sandbox_id}")
    return 0


def _sb_gc(args: argparse.Namespace) -> int:
    from rockroll.sandbox.runtime import local_runtime

    report = local_runtime().gc()
    for kind, items in (
        ("sandbox", report.sandboxes),
        ("mount", report.mounts),
        ("resource", report.resources),
        ("snapshot", report.snapshots),
    ):
        for item in items:
            out.print(f"removed {kind} {item}")
    out.print(f"gc: {report.total} item(s) removed")
    return 0


def _sb_snapshot(args: argparse.Namespace) -> int:
    from rockroll.sandbox.sdk import Sandbox

    snap = Sandbox.connect(args.id).snapshot()
    out.print(snap.id, highlight=False)
    return 0


# -- agent -------------------------------------------------------------------------------------
# Exit codes of `agent run`: 0 submitted, 3 a limit ended the run, 4 the model failed,
# 5 the sandbox failed, 1 bad input, 2 usage, 130 interrupted (the session can be resumed).
EXIT = {"submitted": 0, "answered": 0, "model_error": 4, "sandbox_error": 5}


def _agent_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    run = _add(verbs, "run", _agent_run, "run the agent on an instruction or a task, headless")
    run.add_argument("instruction", nargs="?", help="what to do (default: the task's)")
    run.add_argument("--task", help="a task folder: its image, files and verifier")
    run.add_argument("--resume", metavar="SESSION", help="continue a saved session (id prefix)")
    _agent_options(run)
    run.add_argument("--trajectory", help="also write the ATIF trajectory here")
    run.add_argument("--json", action="store_true", help="JSONL events on stdout, then a record")
    run.add_argument("--keep", action="store_true", help="keep the sandbox after the run")
    chat = _add(verbs, "chat", _agent_chat, "talk to the agent; it asks before running commands")
    chat.add_argument("--resume", metavar="SESSION", help="continue a saved session (id prefix)")
    chat.add_argument("--yolo", action="store_true", help="run commands without asking")
    chat.add_argument("--allow", action="append", default=[], help="command pattern to allow")
    _agent_options(chat)
    listing = _add(verbs, "sessions", _agent_sessions, "list saved sessions, newest first")
    listing.add_argument("-n", type=int, default=20, help="how many (default 20)")


def _agent_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", help="scripted:PATH, openai:MODEL[@URL], local:smollm2 ...")
    cmd.add_argument("--sandbox", default="base", help="image to run in (without --task)")
    cmd.add_argument("--workdir", default="/root", help="working directory in the sandbox")
    cmd.add_argument(
        "--max-turns", type=int, help="turn limit (default 50; a resumed run gets as many more)"
    )
    cmd.add_argument("--max-tokens", type=int, help="tokens per model reply (default 1024)")
    cmd.add_argument("--format", choices=["auto", "native", "tool_call", "bash"])
    cmd.add_argument("--retries", type=int, help="retries of a failing model endpoint (5)")


def _agent_config(args: argparse.Namespace, **fixed: object) -> dict:
    """Only the limits given on the command line, so a resumed run keeps its own."""
    given = {
        "max_turns": args.max_turns,
        "max_tokens_per_turn": args.max_tokens,
        "action_format": args.format,
    }
    return {k: v for k, v in given.items() if v is not None} | fixed


def _agent_launch(args: argparse.Namespace, kind: str, policy: object = None) -> Launch:
    from rockroll.agent import launch
    from rockroll.agent.loop import AgentConfig

    options = _agent_config(args, **({"interactive": True} if kind == "chat" else {}))
    if args.resume:
        return launch.resume(
            args.resume,
            model_spec=args.model,
            policy=policy,  # type: ignore[arg-type]
            retries=args.retries,
            log=err.log,
            **options,
        )
    if not args.model:
        raise SandboxError("--model is required for a new session, e.g. --model local:smollm2")
    return launch.start(
        instruction=getattr(args, "instruction", None),
        model_spec=args.model,
        config=AgentConfig(**options),  # type: ignore[arg-type]
        task_dir=getattr(args, "task", None),
        image=args.sandbox,
        workdir=args.workdir,
        kind=kind,
        policy=policy,  # type: ignore[arg-type]
        retries=args.retries,
        log=err.log,
    )


def _agent_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rockroll.tasks.verify import verify

    if args.resume and (args.instruction or args.task):
        raise SandboxError("--resume continues a saved session: give no instruction or --task")
    run = _agent_launch(args, "run")
    for note in run.notes:
        err.print(note, highlight=False)
    extra = Path(args.trajectory) if args.trajectory else None

    def event(e: dict) -> None:
        if args.json:
            print(json.dumps(e), flush=True)
        elif e["type"] == "step":
            err.print(f"turn {e['turn']}: {', '.join(e['calls']) or 'format error'}")

    def step(state: object) -> None:
        run.save(state)  # type: ignore[arg-type]
        if extra is not None:
            run.state.trajectory.save(extra)

    err.print(f"session {run.record.id} (sandbox {run.sandbox.id})", highlight=False)
    try:
        result = run.loop.run(
            None,
            run.sandbox,
            state=run.state,
            trajectory_path=run.trajectory_path(),
            on_event=event,
            on_step=step,
        )
    except KeyboardInterrupt:
        err.print(f"stopped; continue with: rockroll agent run --resume {run.record.id[:12]}")
        raise
    record = result.record() | {"trajectory": str(run.trajectory_path())}
    if run.task is not None:
        verdict = verify(run.task, run.sandbox)
        record |= {"reward": verdict.reward, "passed": verdict.passed}
    if args.keep:
        record["sandbox"] = run.sandbox.id
    else:
        run.sandbox.close()
    if args.json:
        print(json.dumps({"type": "result", **record}), flush=True)
    else:
        err.print(f"ended: {result.termination} after {result.turns} turns", highlight=False)
        if result.error:
            err.print(f"[red]{result.error}[/]", highlight=False)
    return EXIT.get(result.termination, 3)


def _agent_chat(args: argparse.Namespace) -> int:
    from rockroll.agent.chat import chat
    from rockroll.agent.tools import Policy

    policy = Policy(mode="yolo" if args.yolo else "ask", allow=args.allow)
    run = _agent_launch(args, "chat", policy)
    return chat(run, policy, out, err)


def _agent_sessions(args: argparse.Namespace) -> int:
    from rockroll.agent.sessions import list_records

    table = Table("session", "kind", "created", "model", "turns", "ended", "instruction")
    for r in list_records()[: args.n]:
        table.add_row(
            r.id[:12],
            r.kind,
            r.created[:19],
            r.model,
            str(r.state.turns),
            r.state.termination or "-",
            (r.instruction or "")[:40],
        )
    out.print(table)
    return 0


# -- models ------------------------------------------------------------------------------------
def _model_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    serve = _add(verbs, "serve", _model_serve, "serve a local model as an OpenAI-compatible API")
    serve.add_argument("model", nargs="?", default="smollm2", help="smollm2 or a model folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--name", help="model name clients ask for (default: the model's)")
    serve.add_argument("--dtype", default="float32", help="float32 or bfloat16")


def _model_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rockroll.agent.local import load_local
    from rockroll.agent.models import ModelError
    from rockroll.agent.serve import create_app

    spec = args.model.removeprefix("local:")
    try:
        model = load_local(spec, dtype=args.dtype)
    except ModelError as exc:
        raise SandboxError(str(exc)) from None
    name = args.name or (spec if spec == "smollm2" else spec.rstrip("/").rsplit("/", 1)[-1])
    err.print(
        f"serving {name} on http://{args.host}:{args.port}/v1 "
        f"(use --model openai:{name}@http://{args.host}:{args.port}/v1)",
        highlight=False,
    )
    uvicorn.run(create_app(model, name), host=args.host, port=args.port, log_level="warning")
    return 0


# -- sandbox server ----------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from rockroll.sandbox.spec import parse_size
    from rockroll.service.server import ServeOptions, serve

    options = ServeOptions(
        host=args.host,
        port=args.port,
        db=args.db,
        keep=args.keep,
        max_upload=parse_size(args.max_upload, "--max-upload", minimum=1) or 0,
        max_download=parse_size(args.max_download, "--max-download", minimum=1) or 0,
        max_tree=parse_size(args.max_tree, "--max-tree", minimum=1) or 0,
        public_metrics=args.public_metrics,
        header_timeout=args.header_timeout,
    )
    serve(
        options,
        say=lambda line: err.print(line, highlight=False),
    )
    return 0


def _token_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    create = _add(verbs, "create", _token_create, "create a token; its secret is shown once")
    create.add_argument("name", help="who or what uses it")
    create.add_argument("--admin", action="store_true", help="may see and touch every sandbox")
    create.add_argument("--max-sandboxes", type=int, help="live sandboxes at most")
    create.add_argument("--max-memory", help="total memory limit of its sandboxes, like 64g")
    create.add_argument("--max-cpus", type=float, help="total CPUs of its sandboxes")
    create.add_argument("--max-pids", type=int, help="total process limit of its sandboxes")
    create.add_argument("--max-execs", type=int, help="commands and transfers at once")
    create.add_argument("--max-snapshots", type=int, help="snapshots at most")
    create.add_argument("--max-disk", help="total disk of its sandboxes and snapshots, like 500g")
    create.add_argument(
        "--allow-network", action="store_true", help="may ask for network 'full' (the host's)"
    )
    create.add_argument(
        "--unlimited", action="store_true", help="no default limits, only the ones given"
    )
    create.add_argument("--db", help=DB_HELP)
    ls = _add(verbs, "ls", _token_ls, "list tokens (never their secrets)")
    ls.add_argument("--db", help=DB_HELP)
    revoke = _add(verbs, "revoke", _token_revoke, "revoke a token by id")
    revoke.add_argument("id", help="token id (tok-...)")
    revoke.add_argument("--db", help=DB_HELP)


def _token_create(args: argparse.Namespace) -> int:
    from rockroll.sandbox.spec import parse_size
    from rockroll.service.store import Store

    for flag in ("max_sandboxes", "max_cpus", "max_pids", "max_snapshots"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise SandboxError(f"--{flag.replace('_', '-')} must be 0 or more")
    if args.max_execs is not None and args.max_execs < 1:
        raise SandboxError("--max-execs must be 1 or more")
    memory = parse_size(args.max_memory, "--max-memory") if args.max_memory else None
    disk = parse_size(args.max_disk, "--max-disk") if args.max_disk else None
    token, secret = Store(args.db).create_token(
        args.name,
        admin=args.admin,
        max_sandboxes=args.max_sandboxes,
        max_memory=memory,
        max_cpus=args.max_cpus,
        max_pids=args.max_pids,
        max_execs=args.max_execs,
        max_snapshots=args.max_snapshots,
        max_disk=disk,
        allow_network=args.allow_network,
        unlimited=args.unlimited,
    )
    err.print(f"token {token.id} ({token.name}{', admin' if token.admin else ''}); the secret:")
    print(secret)
    return 0


def _token_ls(args: argparse.Namespace) -> int:
    from rockroll.service.store import Store

    def gib(value: float | None) -> str:
        return "-" if value is None else f"{value / (1 << 30):.0f}G"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    table = Table("id", "name", "admin", "sandboxes", "memory", "cpus", "pids", "execs")
    for column in ("snapshots", "disk", "network", "created", "revoked"):
        table.add_column(column)
    for t in Store(args.db).tokens():
        table.add_row(
            t.id,
            t.name,
            "yes" if t.admin else "",
            num(t.limit("max_sandboxes")),
            gib(t.limit("max_memory")),
            num(t.limit("max_cpus")),
            num(t.limit("max_pids")),
            num(t.limit("max_execs")),
            num(t.limit("max_snapshots")),
            gib(t.limit("max_disk")),
            "full" if t.allow_network or t.unlimited else "none",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.created)),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t.revoked)) if t.revoked else "",
        )
    out.print(table)
    out.print("limits as they apply: - means none (a token made with --unlimited)")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from rockroll.service.store import Store

    if not Store(args.db).revoke_token(args.id):
        raise SandboxError(f"no live token {args.id!r}; `rockroll token ls` lists them")
    out.print(f"revoked {args.id}")
    return 0


# -- training ----------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rockroll.train.config import ConfigError, load_config
    from rockroll.train.report import print_evals, progress_printer

    overrides = {k: v for k, v in (("out", args.out), ("steps", args.steps)) if v is not None}
    try:
        cfg = load_config(Path(args.config), overrides)
        from rockroll.train.trainer import EvalResult, Trainer

        if cfg.distributed == "ray":
            try:
                from rockroll.train.distributed import run_on_ray
            except ImportError as exc:
                raise ConfigError(
                    f"distributed: ray needs Ray ({exc}); pip install 'rockroll[ray]'"
                ) from None

            err.print("training on Ray: the trainer and its rollout workers print as they go")
            evals = [EvalResult(**e) for e in run_on_ray(cfg, resume=args.resume)]
        else:
            trainer = Trainer(cfg, log=lambda line: err.print(line, highlight=False))
            with progress_printer(err, cfg) as on_step:
                evals = trainer.run(resume=args.resume, on_step=on_step)
    except ConfigError as exc:
        raise SandboxError(str(exc)) from None
    print_evals(out, evals)
    err.print(f"metrics: {cfg.out / 'metrics.jsonl'}; checkpoints: {cfg.out / 'checkpoints'}")
    return 0


# -- benchmarks --------------------------------------------------------------------------------
def _bench_commands(parser: argparse.ArgumentParser) -> None:
    verbs = _verbs(parser)
    run = _add(verbs, "run", _bench_run, "run an agent over tasks; resumes an interrupted run")
    run.add_argument("suite", help="a task folder, a folder of tasks, humaneval, rg:NAME?seed=S")
    run.add_argument("--agent", default="oracle", help="oracle, noop, harness (default oracle)")
    run.add_argument("--model", help="model for --agent harness, e.g. scripted:PATH")
    run.add_argument("--max-turns", type=int, default=50, help="harness: turns per task")
    run.add_argument("--max-tokens", type=int, default=1024, help="harness: tokens per turn")
    run.add_argument("-j", "--jobs", type=int, default=2, help="tasks at once (default 2)")
    run.add_argument("--out", help="results folder (default runs/<suite>-<agent>)")
    run.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    report = _add(
        verbs, "report", _bench_report, "summarise a results folder; --html writes a page"
    )
    report.add_argument("out")
    report.add_argument("--html", help="write a self-contained HTML report here")


def _bench_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from rockroll.bench.agents import make_agent
    from rockroll.bench.report import render, summarize
    from rockroll.bench.runner import RESULTS, run_suite, write_summary
    from rockroll.tasks.suites import load_suite

    name = Path(args.suite.rstrip("/")).name.replace("?", "_").replace(":", "_")
    out = Path(args.out or f"runs/{name}-{args.agent}")
    options = {}
    if args.model:
        options = {
            "model": args.model,
            "trajectory_dir": out / "trajectories",
            "max_turns": args.max_turns,
            "max_tokens_per_turn": args.max_tokens,
        }
    try:
        agent = make_agent(args.agent, **options)
        items = load_suite(args.suite)
    except (ValueError, FileNotFoundError) as exc:
        raise SandboxError(str(exc)) from None
    if args.fresh and (out / RESULTS).exists():
        (out / RESULTS).unlink()
    counts = {"passed": 0, "done": 0}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        bar = progress.add_task(f"{agent.name} on {args.suite}", total=len(items))

        def seen(result: object) -> None:
            counts["done"] += 1
            counts["passed"] += bool(getattr(result, "passed", False))
            progress.update(
                bar,
                advance=1,
                description=f"{agent.name} on {args.suite}: {counts['passed']} passed",
            )

        results = run_suite(items, agent, out, jobs=args.jobs, on_result=seen)
    summary = summarize(results)
    write_summary(out, summary)
    render(summary, out_console())
    out_console().print(f"results: {out / RESULTS}")
    return 0


def _bench_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rockroll.bench.report import render, summarize, to_html
    from rockroll.bench.runner import RESULTS, read_results

    out = Path(args.out)
    results = read_results(out)
    if not results:
        raise SandboxError(f"no results in {out / RESULTS}; run `rockroll bench run` first")
    summary = summarize(results)
    render(summary, out_console())
    if args.html:
        Path(args.html).write_text(to_html(results, summary, f"rockroll results: {out}"))
        out_console().print(f"HTML report: {args.html}")
    return 0


def out_console() -> Console:
    return out


# -- demo --------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from rockroll.demo import run_pipeline, run_tour

    if args.tour:
        return run_tour(out)
    return run_pipeline(out, out=args.out, steps=args.steps)


if __name__ == "__main__":
    sys.exit(main())
