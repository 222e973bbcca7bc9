"""Command line: ``parity run``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the parity checks and write a report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        print("parity run: no checks exist yet; nothing was verified.", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
