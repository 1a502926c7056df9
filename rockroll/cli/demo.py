"""`rockroll demo`: evaluate, train with IPA and evaluate SmolLM2 on CPU (or, with --tour, a
tour of the sandbox runtime)."""

from __future__ import annotations

import argparse

from rockroll.cli.common import Verbs, out


def register(nouns: Verbs) -> None:
    demo = nouns.add_parser(
        "demo", help="evaluate, train with IPA and evaluate SmolLM2 on CPU", example="rockroll demo"
    )
    demo.add_argument("--tour", action="store_true", help="a tour of the sandbox runtime instead")
    demo.add_argument("--out", help="output folder (default runs/demo-TIME)")
    demo.add_argument("--steps", type=int, help="IPA steps (default 6)")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from rockroll.demo import run_pipeline, run_tour

    if args.tour:
        return run_tour(out)
    return run_pipeline(out, out=args.out, steps=args.steps)
