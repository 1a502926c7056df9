"""Re-score the token ids stored in trajectories with the local model and report how far the
stored logprobs are from the model's own (they must match: the trainer relies on them).

    .venv/bin/python benchmarks/rescore_trajectories.py runs/evoeval-harness/trajectories
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rockroll.models.local import load_local


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="a folder of ATIF trajectories")
    parser.add_argument("--model", default="smollm2", help="local model name or path")
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    model = load_local(args.model)
    worst, steps, files = 0.0, 0, 0
    for path in sorted(args.folder.glob("*.json")):
        files += 1
        for step in json.loads(path.read_text())["steps"]:
            metrics = step.get("metrics") or {}
            ids, logprobs = metrics.get("completion_token_ids"), metrics.get("logprobs")
            if not ids:
                continue
            again = model.score(metrics["prompt_token_ids"], ids, args.temperature)
            worst = max(worst, *(abs(a - b) for a, b in zip(again, logprobs, strict=True)))
            steps += 1
    print(f"{files} trajectories, {steps} model steps re-scored")
    print(f"max |logprob difference| = {worst:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
