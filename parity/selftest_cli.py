"""The command line of ``parity selftest``: its options, the printed catalog and the exit
code (0 every bug caught and no false alarm, 1 otherwise, 2 bad usage or input). What it
runs is ``parity.selftest``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from parity import catalog, runner, selftest
from parity.options import UsageError, choices, integer
from parity.selftest import (
    DEFAULT_DERIVATION_SEEDS,
    DEFAULT_IMAGES,
    DEFAULT_SEEDS,
    DEFAULT_TRAINING_SEEDS,
    Options,
    run_selftest,
)

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_selftest_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``parity selftest``."""
    parser.add_argument(
        "--out",
        default="reports",
        help="parent folder of the report folder (default: ./%(default)s)",
    )
    parser.add_argument(
        "--dtypes",
        default=",".join(runner.DEFAULT_DTYPES),
        help="comma-separated, float64 and/or float32 (default: %(default)s)",
    )
    parser.add_argument(
        "--models",
        default="all",
        help="comma-separated registered models: the sweep runs these, and --bugs all "
        "means their entries (default: %(default)s)",
    )
    parser.add_argument(
        "--bugs",
        default="all",
        help="comma-separated catalog entries, or 'all' (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        default=str(DEFAULT_SEEDS),
        help="seeds of the false-alarm sweep, 0 to skip it (default: %(default)s)",
    )
    parser.add_argument(
        "--derivation-seeds",
        default=None,
        help=f"of those, how many also run derivations (default: {DEFAULT_DERIVATION_SEEDS})",
    )
    parser.add_argument(
        "--training-seeds",
        default=None,
        help=f"of those, how many also run short training (default: {DEFAULT_TRAINING_SEEDS})",
    )
    parser.add_argument(
        "--images",
        default=str(DEFAULT_IMAGES),
        help="images the forward and gradient checks use (default: %(default)s)",
    )
    parser.add_argument("--list", action="store_true",
                        help="print the catalog of planted bugs and exit")  # fmt: skip
    parser.add_argument("--all-checks", action="store_true",
                        help="every check at every state on each bug (slow): which checks "
                             "catch it on their own")  # fmt: skip
    parser.add_argument("--data", default=None,
                        help="MNIST source, as for parity run (default: bundled)")  # fmt: skip


def options_from_args(args) -> Options:
    from scratch.models import MODEL_NAMES

    every = str(args.models).strip() == "all"
    models = () if every else choices("--models", args.models, MODEL_NAMES)
    bugs = (tuple(e.name for e in catalog.ENTRIES if every or e.model in models)
            if str(args.bugs).strip() == "all"
            else choices("--bugs", args.bugs, tuple(catalog.BY_NAME)))  # fmt: skip
    seeds = integer("--seeds", args.seeds, 0, 1000)
    return Options(
        bugs=bugs, models=models, dtypes=choices("--dtypes", args.dtypes, runner.DEFAULT_DTYPES),
        seeds=seeds, images=integer("--images", args.images, 1, 1000),
        derivation_seeds=_at_most(seeds, "--derivation-seeds", args.derivation_seeds,
                                  DEFAULT_DERIVATION_SEEDS),
        training_seeds=_at_most(seeds, "--training-seeds", args.training_seeds,
                                DEFAULT_TRAINING_SEEDS),
        data=args.data, sweep=seeds > 0, all_checks=bool(args.all_checks),
    )  # fmt: skip


def _at_most(seeds: int, option: str, text, default: int) -> int:
    """A count of the sweep's seeds: given, it must be <= --seeds; defaulted, it is clamped."""
    return min(default, seeds) if text is None else integer(option, text, 0, seeds)


def selftest_command(args) -> int:
    """``parity selftest``: 0 every bug caught and no false alarm, 1 otherwise, 2 bad usage."""
    from parity.data import DataError, load_mnist
    from parity.reports import ReportError, check_writable, write_report

    if args.list:
        print(format_entries())
        return EXIT_PASS
    try:
        options = options_from_args(args)
        check_writable(args.out)
        load_mnist(options.data, argument="--data")  # its errors name the option as typed
        runner.load_batches(runner.RunConfig(images=options.images, data=options.data))
    except (UsageError, DataError, ReportError) as error:
        print(f"parity selftest: {error}", file=sys.stderr)
        return EXIT_USAGE
    result = run_selftest(options)
    try:
        folder = write_report(result, args.out)
    except ReportError as error:
        print(f"parity selftest: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(format_catalog(result.catalog))
    bugs = result.catalog[result.catalog["kind"] == "bug"]
    alarms = int(result.catalog["false_alarms"].fillna(0).sum())
    print(f"\n{int((bugs['caught'] == 'yes').sum())} of {len(bugs)} bug runs caught, "
          f"{alarms} false alarms, {result.seconds:.1f} s")  # fmt: skip
    print(f"report: {folder}")
    return EXIT_PASS if result.passed else EXIT_FAIL


def format_entries() -> str:
    """One line per catalog entry: name, model, what the bug is."""
    width = max(len(e.name) for e in catalog.ENTRIES)
    return "\n".join(f"{e.name.ljust(width)}  {e.model:<8}  {e.description}"
                     for e in catalog.ENTRIES)  # fmt: skip


def format_catalog(frame: pd.DataFrame) -> str:
    header = ("bug", "model", "dtype", "caught", "check", "layer/quantity", "error")
    lines = []
    for r in frame.itertuples(index=False):
        if r.kind == "bug":
            where = f"{r.layer}/{r.quantity}" if r.caught == "yes" else ""
            error = f"{r.error:.2e}" if r.caught == "yes" else ""
            lines.append((r.bug, r.model, r.dtype, r.caught, r.check or "-", where, error))
        else:
            lines.append((r.bug, r.model, r.dtype, f"{int(r.false_alarms)} false alarms",
                          f"{int(r.checks_run)} checks", f"{int(r.seeds)} seeds", ""))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip()
                     for cells in [header, *lines])  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="parity selftest", description=selftest.__doc__)
    add_selftest_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return selftest_command(args)


if __name__ == "__main__":
    sys.exit(main())
