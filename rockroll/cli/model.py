"""`rockroll model`: serve a local model as an OpenAI-compatible API."""

from __future__ import annotations

import argparse

from rockroll.cli.common import Verbs, add, err, verbs

GRACE = 10.0
"""Seconds in-flight requests get to finish after SIGTERM or Ctrl-C before the server exits."""


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("model", help="serve a local model over HTTP")
    commands = verbs(parser)
    serve = add(
        commands,
        "serve",
        serve_model,
        "serve a local model as an OpenAI-compatible API",
        example="rockroll model serve smollm2 --port 8000",
    )
    serve.add_argument("model", nargs="?", default="smollm2", help="smollm2 or a model folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--name", help="model name clients ask for (default: the model's)")
    serve.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    serve.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="requests decoded at once (default 16); they join and leave between decoding "
        "steps, so a short request never waits for a long one to finish",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=GRACE,
        help=f"seconds in-flight requests get after SIGTERM or Ctrl-C (default {GRACE:g})",
    )


def serve_model(args: argparse.Namespace) -> int:
    import logging
    import os
    import socket
    import threading

    import uvicorn

    from rockroll.errors import UsageError
    from rockroll.models.local import load_local
    from rockroll.models.serve import create_app

    if args.max_batch < 1:
        raise UsageError(f"model serve: --max-batch must be 1 or more, got {args.max_batch}")
    spec = args.model.removeprefix("local:")
    model = load_local(spec, dtype=args.dtype)  # a ModelError names what it cannot load
    model.batch_continuously(args.max_batch)
    name = args.name or (spec if spec == "smollm2" else spec.rstrip("/").rsplit("/", 1)[-1])
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"model serve: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
            "pick another --port"
        ) from None
    sock.listen(128)
    port = sock.getsockname()[1]
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("rockroll.serve").setLevel(logging.INFO)  # one line per request
    config = uvicorn.Config(
        create_app(model, name), log_level="warning", timeout_graceful_shutdown=args.grace
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.02)
        if server.started:
            err.print(
                f"serving {name} on http://{args.host}:{port}/v1 "
                f"(use --model openai:{name}@http://{args.host}:{port}/v1)",
                highlight=False,
            )

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])  # uvicorn re-raises SIGTERM once it has shut down
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if busy:  # requests still decoding when the grace period ended: do not wait for them
        os._exit(0)
    return 0
