"""The scorer registry (config ``scoring.scorers``) and the scoring command line.

Every scorer writes rows of one tidy table (stepscope.analysis.score_table, docs/scoring.md):

* ``stepscope-proxy`` (stepscope.analysis.proxy_scorer): our deterministic approximation of
  VBVR-Bench's weighted mode, *not* VBVR's score; the analysis batches score every run with it.
* ``vbvr-evalkit`` (stepscope.analysis.evalkit): the reference, VBVR-EvalKit, in its own pinned
  environment; one job scores the whole videos tree into `Scorer.table`.

Adding a scorer = one module plus one `SCORERS` line (docs/extending.md, "Add a scorer"). Usage:
``python -m stepscope.analysis.scoring {proxy,evalkit} ...``. Imports neither torch nor cv2, so
it also runs inside the EvalKit environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from stepscope.analysis import evalkit, proxy_scorer
from stepscope.analysis.score_table import RENAMED_SCORERS


@dataclass(frozen=True)
class Scorer:
    """One scorer: what its numbers are, where the workflow finds its table, its CLI subcommand."""

    title: str  # what its numbers are, for table and figure labels
    modes: dict[str, str]  # metric -> the scoring mode it stands for (labels)
    table: str | None  # results-relative table its own rule writes; None: the analysis batches score runs
    cli: str  # subcommand of `python -m stepscope.analysis.scoring`
    cli_help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(repr=False)
    run: Callable[[argparse.Namespace], int] = field(repr=False)


SCORERS: dict[str, Scorer] = {
    proxy_scorer.PROXY: Scorer(
        title="stepscope-proxy (approximation, not VBVR's score)",
        modes={"total": "weighted sum of the proxy's 5 dimensions"},
        table=None,
        cli="proxy",
        cli_help="score one video with the stepscope-proxy scorer, print JSON",
        add_arguments=proxy_scorer.add_cli_arguments,
        run=proxy_scorer.run_cli,
    ),
    evalkit.EVALKIT: Scorer(
        title="VBVR-EvalKit",
        modes={
            "task_specific": "task-specific mode (leaderboard)",
            "weighted": "composite mode (5 weighted dimensions)",
        },
        table="scores/evalkit.parquet",
        cli="evalkit",
        cli_help="score a videos tree with VBVR-EvalKit into a Parquet table",
        add_arguments=evalkit.add_cli_arguments,
        run=evalkit.run_cli,
    ),
}
METRIC_MODES = {metric: mode for scorer in SCORERS.values() for metric, mode in scorer.modes.items()}


def check_scorer_names(names: Iterable[str]) -> None:
    """Fail naming the fix for a renamed or unknown scorer (config ``scoring.scorers``)."""
    for name in names:
        if name in RENAMED_SCORERS:
            raise ValueError(
                f"config error at `scoring.scorers`: the scorer {name!r} was renamed "
                f"{RENAMED_SCORERS[name]!r}: it approximates VBVR-Bench, it is not VBVR's score "
                f"(docs/scoring.md); write {RENAMED_SCORERS[name]!r}"
            )
        if name not in SCORERS:
            raise ValueError(f"config error at `scoring.scorers`: unknown scorer {name!r}; known: {sorted(SCORERS)}")


def scorer_tables(names: Iterable[str]) -> list[str]:
    """Results-relative score tables that the configured scorers' own rules write."""
    return [SCORERS[name].table for name in names if SCORERS[name].table is not None]


def score_label(scorer: str, metric: str) -> str:
    """What a number is, for tables and figures: metric, scorer and mode."""
    mode = METRIC_MODES.get(metric)
    title = SCORERS[scorer].title if scorer in SCORERS else scorer
    return f"{metric} [{title}" + (f"; {mode}]" if mode else "]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepscope.analysis.scoring", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    by_command = {}
    for scorer in SCORERS.values():
        scorer.add_arguments(sub.add_parser(scorer.cli, help=scorer.cli_help))
        by_command[scorer.cli] = scorer
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in RENAMED_SCORERS:
        parser.error(f"{argv[0]!r} was renamed 'proxy' (the stepscope-proxy scorer, not VBVR's score)")
    args = parser.parse_args(argv)
    return by_command[args.command].run(args)


if __name__ == "__main__":
    raise SystemExit(main())
