"""The `mova` command. Each subcommand lives in its own module with a `register(subparsers)` function."""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under movakit.cli; each defines register(subparsers) and sets `func` on its parsers.
_COMMAND_MODULES = ("generate", "tiny_checkpoint", "enhance", "stack", "jobs", "adapters", "finetune")


class UsageError(Exception):
    """A bad command-line option: printed as `mova: error: <message>` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mova", description="Run MOVA: text + first frame -> video with sound.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"movakit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.exit(2, f"mova: error: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
