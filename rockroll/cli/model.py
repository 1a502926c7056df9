"""`rockroll model`: serve a local model as an OpenAI-compatible API."""

from __future__ import annotations

import argparse

from rockroll.cli.common import Verbs, add, err, verbs


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


def serve_model(args: argparse.Namespace) -> int:
    import uvicorn

    from rockroll.models.local import load_local
    from rockroll.models.serve import create_app

    spec = args.model.removeprefix("local:")
    model = load_local(spec, dtype=args.dtype)  # a ModelError names what it cannot load
    name = args.name or (spec if spec == "smollm2" else spec.rstrip("/").rsplit("/", 1)[-1])
    err.print(
        f"serving {name} on http://{args.host}:{args.port}/v1 "
        f"(use --model openai:{name}@http://{args.host}:{args.port}/v1)",
        highlight=False,
    )
    uvicorn.run(create_app(model, name), host=args.host, port=args.port, log_level="warning")
    return 0
