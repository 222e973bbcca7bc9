"""Command line: parity run, parity check, parity selftest.

Every row of the report has a status: PASS; FAIL (the values differ beyond the budget);
ERROR (the code under test raised: type, message, file:line); NOT_PROVIDED (the
implementation does not produce the quantity by design); INCONCLUSIVE (too little was
left to judge). Exit codes: 0 all passed; 1 a FAIL or INCONCLUSIVE row; 2 bad usage or
input (the message names the argument or file, the rule and the value; no report folder
is left behind); 3 an ERROR row (the report is still written).
"""

from __future__ import annotations

import argparse
import re
import sys

from parity import runner, training_report
from parity.checks.training_config import DEFAULT_KERAS_PATHS, KERAS_PATHS
from parity.compare import (
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_USAGE,
    NOT_PROVIDED,
    PASS,
    STATUSES,
)
from parity.options import UsageError, choices, integer, positive
from parity.selftest_cli import add_selftest_arguments, selftest_command
from reference.optimizers import OPTIMIZERS

# per optimizer (reference.optimizers): the blog's SGD 0.005, 0.0005 with momentum, 0.001 else
DEFAULT_LEARNING_RATES = {name: kind.learning_rate for name, kind in OPTIMIZERS.items()}

__all__ = ["EXIT_ERROR", "EXIT_FAIL", "EXIT_PASS", "EXIT_USAGE", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                  allow_abbrev=False)  # fmt: skip
    parser = argparse.ArgumentParser(prog="parity", **common)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the parity checks and write a report", **common)
    add_run_arguments(run)
    selftest = sub.add_parser(
        "selftest", help="run the harness against a catalog of real backprop bugs", **common
    )
    add_selftest_arguments(selftest)
    from parity.check import CHECK_HELP, add_check_arguments

    check = sub.add_parser("check", help=CHECK_HELP, **{**common, "description": check_doc()})
    add_check_arguments(check, add_run_arguments)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnn-parity")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _model_names() -> tuple[str, ...]:
    from scratch.models import MODEL_NAMES  # numpy only: --help stays fast

    return MODEL_NAMES


def check_doc() -> str:
    """``parity check --help``'s text: the check module's docstring (its reST literals
    shown plainly on a terminal), then the statuses and exit codes."""
    from parity.check import __doc__ as check_description

    return check_description.replace("``", "") + "\n" + __doc__.split("\n\n", 1)[1]


def _optimizer_help() -> str:
    """``--optimizer``'s help: every name with the Keras optimizer it trains with."""
    listed = "; ".join(f"{k.name} = {k.describe()}" for k in OPTIMIZERS.values())
    return (f"the Keras optimizer both sides train with: {listed}. Keras 3's default "
            "hyper-parameters, but momentum 0.9 (cs231n's; Keras's default 0 is plain SGD) "
            "(default: sgd)")  # fmt: skip


def _lr_help() -> str:
    """``0.005 for sgd; ...; a network's own where it has one: cs231n-3layer,
    cs231n-3layer-chw (0.01 for momentum, nesterov; 0.001 for adam)`` (``spec.networks``)."""
    from spec.networks import NETWORKS

    def grouped(rates: dict) -> str:
        by_rate: dict[float, list[str]] = {}
        for name, rate in rates.items():
            by_rate.setdefault(rate, []).append(name)
        return "; ".join(f"{rate:g} for {', '.join(names)}" for rate, names in by_rate.items())

    own: dict[str, list[str]] = {}  # the networks' tables, networks sharing one grouped
    for network in NETWORKS.values():
        if network.learning_rates:
            own.setdefault(grouped(network.learning_rates), []).append(network.name)
    networks = "; ".join(f"{', '.join(names)} ({table})" for table, names in own.items())
    return f"{grouped(DEFAULT_LEARNING_RATES)}; a network's own where it has one: {networks}"


def add_run_arguments(run: argparse.ArgumentParser, models: bool = True) -> None:
    """Options of ``parity run`` (the training options join this group); ``parity check``
    takes them all but ``--models``."""
    if models:
        run.add_argument(
            "--models",
            default=",".join(runner.DEFAULT_MODELS),
            help=f"comma-separated, from {', '.join(_model_names())} (default: %(default)s)",
        )
    run.add_argument(
        "--dtypes",
        default=",".join(runner.DEFAULT_DTYPES),
        help="comma-separated, float64 and/or float32 (default: %(default)s)",
    )
    run.add_argument(
        "--seed",
        default=str(runner.DEFAULT_SEED),
        help="seeds weights, batches, jitter, FD samples (default: %(default)s)",
    )
    run.add_argument(
        "--out",
        default="reports",
        help="parent folder of the report folder (default: ./%(default)s)",
    )
    run.add_argument(
        "--images",
        default=str(runner.DEFAULT_IMAGES),
        help="images the forward and gradient checks use (default: %(default)s)",
    )
    training = run.add_argument_group("training curves (the blog's schedule by default)")
    training.add_argument(
        "--epochs", default="3", help="epochs of the training-curve check; 0 skips it (default: 3)"
    )
    training.add_argument(
        "--train-size", default="1000", help="training images per epoch (default: %(default)s)"
    )
    training.add_argument(
        "--test-size",
        default="1000",
        help="held-out images for test loss/accuracy (default: %(default)s)",
    )
    training.add_argument("--optimizer", default="sgd", help=_optimizer_help())
    training.add_argument(
        "--batch-size", default=None,
        help="mini-batch size (default: the network's own: 1, or 32 with batch norm)",
    )  # fmt: skip
    training.add_argument("--lr", default=None, help=f"learning rate (default: {_lr_help()})")
    training.add_argument(
        "--keras-path",
        default=",".join(DEFAULT_KERAS_PATHS),
        help="free-running Keras path(s), comma-separated: epoch (Keras's own training step, "
        "a whole epoch inside one tf.function: the fastest, bit-identical to fit, proven in "
        "a test), fit (model.fit, the path users take), tape (one compiled tf.GradientTape "
        "step per batch); lockstep always runs too (default: %(default)s)",
    )
    training.add_argument(
        "--diagnose",
        action="store_true",
        help="always report lockstep's first divergence (its step, layer and kind; on a "
        "passing check its closest step); by default only when a training check fails",
    )
    training.add_argument(
        "--blog-printout",
        action="store_true",
        help="print the blog's log (loss, accuracy per 100 steps)",
    )
    run.add_argument("--data", default=None,
                     help="MNIST: a Keras mnist.npz, a folder of IDX files, or 'keras' "
                          "(default: the bundled 5,000-image subset)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, printed)
        return int(exit_.code or 0)
    if unknown:
        print(f"parity {args.command}: {unknown_options(parser, args.command, unknown)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.command == "run":
        return run_command(args)
    if args.command == "selftest":
        return selftest_command(args)
    if args.command == "check":
        from parity.check import check_command

        return check_command(args, run_command)
    return EXIT_USAGE


def unknown_options(parser, command: str, unknown: list[str]) -> str:
    """``Unknown argument `--epoch`. Expected one of the options of `parity run`; did you
    mean `--epochs`? Received --epoch 3.`` (abbreviations are refused on purpose)."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = [o for a in sub.choices[command]._actions for o in a.option_strings]
    first = next((u for u in unknown if u.startswith("-")), unknown[0]).split("=")[0]
    close = difflib.get_close_matches(first, options, n=1, cutoff=0.75)
    hint = f"; did you mean `{close[0]}`?" if close else f" ({', '.join(options)})."
    return (f"Unknown argument `{first}`. Expected one of the options of `parity {command}`"
            f"{hint} Received {' '.join(unknown)}.")  # fmt: skip


def run_command(args, user_code=None) -> int:
    """``parity run``; with ``user_code`` (a located ``scratch.user_code.UserCode``) the
    same checks on the user's code: ``parity check``."""
    from parity.data import DataError, load_mnist
    from parity.reports import ReportError, check_writable, write_report

    prog = "parity run" if user_code is None else "parity check"
    try:
        config = config_from_args(args, user_code)
        check_writable(args.out)
        # as the user typed it: `--data` (load_batches loads it again: cheap)
        check_pools(config, load_mnist(config.data, argument="--data"))
        batches = runner.load_batches(config)
    except (UsageError, DataError, ReportError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    results = runner.run(config, batches=batches)
    if user_code is not None:
        from parity.check import name_user_classes

        name_user_classes(results, user_code)
    try:
        folder = write_report(results, args.out, extra_writers=[training_writer(results)])
    except ReportError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.blog_printout:
        for result in results.curves:
            print("\n".join(training_report.blog_printout(result)) + "\n")
    print(format_table(results.summary))
    for section in (format_not_provided, format_messages):
        text = section(results.summary)
        if text:
            print(text)
    diagnosis = format_diagnosis(results.tables.get("diagnosis"))
    if diagnosis:
        print(diagnosis)
    divergence = training_report.format_first_divergence(results.curves)
    if divergence:
        print(divergence)
    print(f"\n{len(results.summary)} checks: {status_counts(results.summary)}, "
          f"{results.seconds:.1f} s")  # fmt: skip
    print(f"report: {folder}")
    return results.exit_code


def status_counts(summary) -> str:
    """``"50 PASS, 2 FAIL"``: how many summary rows have each status, worst last."""
    counts = summary["status"].value_counts()
    order = [s for s in reversed(STATUSES) if s in counts]
    return ", ".join(f"{int(counts[s])} {s}" for s in order) or "none"


def training_writer(results):
    """Writes training.csv, epochs.csv, divergence.csv and the plots into the run folder."""
    return lambda folder: training_report.write_outputs(results.curves, folder)


def config_from_args(args, user_code=None) -> runner.RunConfig:
    from scratch.models import MODEL_NAMES

    if user_code is None:
        models = choices("--models", args.models, MODEL_NAMES)
    else:
        models = (user_code.name,)
    dtypes = choices("--dtypes", args.dtypes, runner.DEFAULT_DTYPES)
    seed = integer("--seed", args.seed, 0, 2**32 - 1)
    images = integer("--images", args.images, 1, None)  # bounded by the data: check_pools
    return runner.RunConfig(models=models, dtypes=dtypes, seed=seed, images=images,
                            data=args.data, training=training_from_args(args),
                            user_code=() if user_code is None else (user_code,))  # fmt: skip


def training_from_args(args) -> runner.TrainingOptions | None:
    """The training schedule, every option validated even when ``--epochs 0`` skips it."""
    epochs = integer("--epochs", args.epochs, 0, 10_000)
    optimizer = str(args.optimizer).strip()
    if optimizer not in OPTIMIZERS:
        raise UsageError(
            f"Invalid value for argument `--optimizer`. Expected one of "
            f"{', '.join(OPTIMIZERS)}. Received --optimizer={args.optimizer!r}."
        )
    # None: the optimizer's default, or the network's own (runner.TrainingOptions.for_model)
    lr = None if args.lr is None else positive("--lr", args.lr)
    options = runner.TrainingOptions(
        optimizer=optimizer, learning_rate=lr, epochs=epochs,
        batch_size=(None if args.batch_size is None
                    else integer("--batch-size", args.batch_size, 1, 60_000)),
        train_size=integer("--train-size", args.train_size, 1, 60_000),
        test_size=integer("--test-size", args.test_size, 1, 10_000),
        keras_paths=choices("--keras-path", args.keras_path, KERAS_PATHS),
        diagnose=bool(getattr(args, "diagnose", False)),
    )  # fmt: skip
    return options if epochs else None


def check_pools(config: runner.RunConfig, mnist) -> None:
    """--images, --train-size, --test-size must fit the data's splits (known once loaded)."""
    training = config.training
    sizes = [("--images", config.images, "test", mnist.test_images)]
    if training is not None:
        sizes += [("--train-size", training.train_size, "training", mnist.train_images),
                  ("--test-size", training.test_size, "test", mnist.test_images)]  # fmt: skip
    for option, size, split, pool in sizes:
        if size > len(pool):
            raise UsageError(
                f"Invalid value for argument `{option}`. Expected at most {len(pool)} (the "
                f"{split} split size of {mnist.source}). Received {option}={size}."
            )  # fmt: skip


def format_diagnosis(diagnosis) -> str:
    """One paragraph per signature seen (``parity.diagnosis``), once per model, dtype and
    layer (the first state that showed it); empty when none was seen."""
    if diagnosis is None or diagnosis.empty:
        return ""
    keys = ["model", "dtype", "layer", "signature", "transform"]  # two layouts: two lines
    first = diagnosis.drop_duplicates([k for k in keys if k in diagnosis.columns])
    lines = ["", "diagnosis:"]
    for row in first.itertuples(index=False):
        lines.append(f"  {row.model} {row.dtype} {row.layer}: {row.signature}: {row.evidence}.")
        lines.append(f"    fix: {row.advice}.")
    return "\n".join(lines)


MESSAGE_CHARS = 400  # a message on the console; summary.csv has it whole
LISTED_ROWS = 8  # rows named under one message on the console; the rest are counted
# compare.error's and compare.not_provided's prefixes: the rows listed say where
ROW_PREFIX = re.compile(r"^(error|not provided): layer `[^`]*` quantity `[^`]*`: ")


def format_messages(summary) -> str:
    """The messages of the rows that are neither PASS nor NOT_PROVIDED (what failed, where,
    the exception and its file:line for an ERROR, the setting for a sweep row), each
    distinct message once with the rows it explains: one exception in the user's code
    makes an ERROR row in every check that called the method, all with the same message.
    An ERROR's message is keyed without its ``layer ... quantity ...`` prefix (the rows
    say where). Each message is cut to ``MESSAGE_CHARS``, its ``(at file:line)`` kept;
    empty when every row passed."""
    return _grouped(summary[~summary["status"].isin([PASS, NOT_PROVIDED])], "messages:")


def format_not_provided(summary) -> str:
    """Why each NOT_PROVIDED row is so (the blog's first layer returns no input gradient; a
    factory supplies no preprocessing, so the documented one is assumed), each distinct
    reason once with its rows, as :func:`format_messages`; empty when there are none."""
    return _grouped(summary[summary["status"] == NOT_PROVIDED], "not provided:")


def _grouped(rows, title: str) -> str:
    if rows.empty:
        return ""
    groups: dict[tuple[str, str], list] = {}
    for row in rows.itertuples(index=False):
        message = ROW_PREFIX.sub("", " ".join(str(row.message).split()))  # one line
        groups.setdefault((row.status, message), []).append(row)
    lines = ["", title]
    for (status, message), same in groups.items():
        message = shorten(message, MESSAGE_CHARS)
        if len(same) == 1:
            row = same[0]
            lines.append(f"  {row.check} {row.model} {row.dtype} {row.layer}/{row.quantity} "
                         f"{status}: {message}")  # fmt: skip
        else:
            lines.append(f"  {status} in {len(same)} rows ({_row_list(same)}): {message}")
    return "\n".join(lines)


def _row_list(rows) -> str:
    """``user float64: forward -/-, gradients -/-``: the fields every row shares said once,
    then each row's own; at most ``LISTED_ROWS`` rows, the rest counted."""
    fields = [(r.check, r.model, r.dtype, f"{r.layer}/{r.quantity}") for r in rows]
    shared = [i for i in (1, 2) if len({f[i] for f in fields}) == 1]  # model, dtype
    own = [" ".join(x for i, x in enumerate(f) if i not in shared) for f in fields]
    listed = ", ".join(own[:LISTED_ROWS])
    if len(own) > LISTED_ROWS:
        listed += f" and {len(own) - LISTED_ROWS} more"
    prefix = " ".join(fields[0][i] for i in shared)
    return f"{prefix}: {listed}" if prefix else listed


def shorten(message: str, limit: int) -> str:
    """``message`` cut to ``limit`` characters with ``...``; a trailing ``(at file:line
    ...)`` (where an exception was raised) is kept whole when it fits in half the limit."""
    if len(message) <= limit:
        return message
    at = message.rfind(" (at ")
    tail = message[at:] if at > 0 and message.endswith(")") else ""
    if len(tail) > limit // 2:
        tail = ""
    return message[: limit - 3 - len(tail)] + "..." + tail


def format_table(summary) -> str:
    """One line per summary row: check, model, dtype, the weight state of the worst row,
    layer/quantity, the worst error and its kind, the budget applied (atol, rtol), status."""
    header = ("check", "model", "dtype", "state", "layer/quantity", "worst error",
              "budget (atol, rtol)", "status")  # fmt: skip
    lines = []
    for row in summary.itertuples(index=False):
        kind = "abs" if row.error_kind == "max abs" else "rel"
        error = "-" if row.worst_error != row.worst_error else f"{row.worst_error:.2e} {kind}"
        budget = f"{row.atol:.1e}, {row.rtol:.1e}"
        user_class = getattr(row, "user_class", "")  # parity check: the user's class
        has_class = isinstance(user_class, str) and user_class  # NaN read back from a CSV: none
        layer = f"{row.layer} ({user_class})" if has_class else row.layer
        state = row.worst_state if isinstance(row.worst_state, str) else "-"
        lines.append((row.check, row.model, row.dtype, state,
                      f"{layer}/{row.quantity}", error, budget, row.status))  # fmt: skip
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    render = ["  ".join(str(x).ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip()
              for cells in [header, *lines]]  # fmt: skip
    return "\n".join(render)


if __name__ == "__main__":
    sys.exit(main())
