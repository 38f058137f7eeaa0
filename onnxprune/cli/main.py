"""Entry point: ``onnxprune SUBCOMMAND ...``. Errors are one line on stderr with a documented exit code."""

from __future__ import annotations

import os
import sys

from onnxprune import __version__
from onnxprune.cli import (
    bench_cmd,
    compress_cmd,
    emit_cmd,
    finetune_cmd,
    fold_cmd,
    inspect_cmd,
    profile_cmd,
    prune_cmd,
    sensitivity_cmd,
    zoo_cmd,
)
from onnxprune.cli.common import OneLineParser, report_error
from onnxprune.errors import OnnxPruneError, ResourceLimitError, UsageError
from onnxprune.limits import is_out_of_memory
from onnxprune.metrics import metric_scope
from onnxprune.progress import Reporter, reporting
from onnxprune.signals import Terminated, exit_status, termination_as_interrupt

SUBCOMMANDS = (inspect_cmd, fold_cmd, profile_cmd, prune_cmd, sensitivity_cmd, compress_cmd, finetune_cmd, emit_cmd,
               bench_cmd, zoo_cmd)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="onnxprune", description="Make exported ONNX CNNs smaller and faster.")
    parser.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument("-q", "--quiet", action="store_true",
                             help="no progress (a bar on a terminal, a line per stage otherwise)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or bool(os.environ.get("ONNXPRUNE_DEBUG"))
    try:
        with termination_as_interrupt():
            args = build_parser().parse_args(argv)
            if not getattr(args, "run", None):
                raise UsageError("missing command (see 'onnxprune --help')")
            with reporting(None if args.quiet else Reporter.for_stream(sys.stderr)), metric_scope():
                return args.run(args)
    except OnnxPruneError as e:
        return report_error("onnxprune", e)
    except KeyboardInterrupt as e:
        how = f"terminated by {e}" if isinstance(e, Terminated) else "interrupted"
        print(f"onnxprune: {how}", file=sys.stderr)
        return exit_status(e)
    except Exception as e:  # a bug: still one line unless --debug
        if debug:
            raise
        if is_out_of_memory(e):
            return report_error("onnxprune", ResourceLimitError(
                f"out of memory ({type(e).__name__}: {' '.join(str(e).split())[:200]})"))
        print(f"onnxprune: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              f"(rerun with --debug for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
