"""`rockroll serve`: serve sandboxes over HTTP (auth, state, TTLs) until stopped."""

from __future__ import annotations

import argparse

from rockroll.cli.common import DB_HELP, Verbs, err


def register(nouns: Verbs) -> None:
    serve = nouns.add_parser(
        "serve",
        help="serve sandboxes over HTTP (auth, state, TTLs)",
        example="rockroll serve --port 8321",
    )
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
    serve.add_argument(
        "--e2b",
        action="store_true",
        help="also speak E2B's API, for an unchanged e2b SDK (E2B_API_URL, E2B_SANDBOX_URL)",
    )
    serve.set_defaults(func=run_server)


def run_server(args: argparse.Namespace) -> int:
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
        e2b=args.e2b,
    )
    serve(
        options,
        say=lambda line: err.print(line, highlight=False),
    )
    return 0
