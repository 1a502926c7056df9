"""`rockroll train CONFIG`: train a local policy with RL (IPA) from a config."""

from __future__ import annotations

import argparse

from rockroll.cli.common import Verbs, err, out


def register(nouns: Verbs) -> None:
    train = nouns.add_parser(
        "train",
        help="train a local policy with RL (IPA) from a config",
        example="rockroll train train.yaml --steps 20",
    )
    train.add_argument("config", help="YAML config (see rockroll/train/config.py)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--out", help="output folder (overrides the config's `out`)")
    train.add_argument("--steps", type=int, help="RL steps (overrides the config's `steps`)")
    train.set_defaults(func=run_training)


def run_training(args: argparse.Namespace) -> int:
    """A bad config or suite raises ConfigError or TaskError, which `main` prints as one line."""
    from pathlib import Path

    from rockroll.errors import ConfigError
    from rockroll.train.config import load_config
    from rockroll.train.report import print_evals, progress_printer

    overrides = {k: v for k, v in (("out", args.out), ("steps", args.steps)) if v is not None}
    cfg = load_config(Path(args.config), overrides)
    from rockroll.train.trainer import EvalResult, Trainer  # torch: only for a config that loads

    if cfg.rollout.mode == "ray":
        try:
            from rockroll.train.distributed import run_on_ray
        except ImportError as exc:
            raise ConfigError(
                f"rollout.mode: ray needs Ray ({exc}); pip install 'rockroll[ray]'"
            ) from None

        err.print("training on Ray: the trainer and its rollout workers print as they go")
        evals = [EvalResult(**e) for e in run_on_ray(cfg, resume=args.resume)]
    else:
        trainer = Trainer(cfg, log=lambda line: err.print(line, highlight=False))
        with progress_printer(err, cfg) as on_step:
            evals = trainer.run(resume=args.resume, on_step=on_step)
    print_evals(out, evals)
    err.print(f"metrics: {cfg.out / 'metrics.jsonl'}; checkpoints: {cfg.out / 'checkpoints'}")
    return 0
