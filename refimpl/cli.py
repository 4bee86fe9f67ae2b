"""The `refimpl` command.

    refimpl conform                      self-check: the NumPy reference against its own goldens
    refimpl conform --adapter pkg.mod:obj   check your implementation (a dict component -> fn)
    refimpl conform --results DIR        check outputs any program wrote as DIR/<component>/<case>/*.npy
    refimpl golden generate --out DIR    write every golden case
    refimpl golden verify                regenerate into a scratch folder, compare with the goldens
    refimpl golden list                  the committed cases
    refimpl demo [ulim] [--quick]        ULIM end to end: train every model, retrieve, print the tables
    refimpl demo ulim --data DIR --format movielens-1m   the same on your own log
    refimpl demo umi [--quick]           UMI end to end: its Tables 2, 3 and 5 (`refimpl demo umi --help`)
    refimpl demo ifa [--quick]           IFA end to end: its Tables 2 and 3 on planted request data
    refimpl --version

The goldens are the suite shipped inside the package (`--golden DIR` reads another folder).
Every command runs its NumPy work with BLAS on one thread (refimpl.threads; `refimpl demo
--threads N` chooses N) and gives the caller's setting back when it ends.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refimpl import __version__
from refimpl.conformance.expectations import Expectations, load_expectations
from refimpl.conformance.report import format_table, to_json, to_junit
from refimpl.conformance.runner import (
    DEFAULT_TIMEOUT,
    Adapter,
    UsageError,
    implementation_frames,
    reference_adapter,
    run_conformance,
    run_results,
)
from refimpl.demos import DEMOS
from refimpl.golden import default_golden_root
from refimpl.golden.format import GoldenError, find_cases, read_case
from refimpl.golden.generate import generate, verify
from refimpl.golden.manifest import check_manifest
from refimpl.threads import COMMAND_THREADS, blas_threads


def load_adapter(spec: str) -> Adapter:
    """`pkg.mod:obj` -> the mapping it names (or that the zero-argument callable it names returns).

    Anything that goes wrong here (a module that does not import, a factory that raises or exits) is a
    usage error: no case has run yet."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--adapter: expected 'package.module:object', got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the adapter may live in the current folder
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:
        raise UsageError(f"--adapter: importing {module_name} raised {_exception_at(error)}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"--adapter: {module_name} has no attribute {attribute!r}") from None
    if not isinstance(obj, Mapping) and callable(obj):
        try:
            obj = obj()
        except (Exception, SystemExit) as error:
            raise UsageError(f"--adapter: the factory {spec}() raised {_exception_at(error)}") from None
    if not isinstance(obj, Mapping):
        raise UsageError(
            f"--adapter: {spec} is a {type(obj).__name__}; expected a mapping from component "
            "name to function, or a function returning one"
        )
    return obj


def _exception_at(error: BaseException) -> str:
    """`Type: message (at file:line)`, the innermost frame of the exception."""
    location = implementation_frames(error)[1]
    return f"{type(error).__name__}: {error}" + (f" (at {location})" if location else "")


def _conform(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    expectations = load_expectations(Path(args.expectations)) if args.expectations else Expectations()
    common = dict(golden_root=golden, components=args.component, cases=args.case, dtype=args.dtype,
                  expectations=expectations, strict=args.strict)
    if args.results:
        report = run_results(Path(args.results), **common)
    else:
        adapter = load_adapter(args.adapter) if args.adapter else reference_adapter()
        report = run_conformance(adapter, timeout=args.timeout, **common)
        if not args.adapter:
            report.source = "NumPy reference"
            report.self_check = True
    print(format_table(report, verbose=args.verbose))
    if args.json:
        Path(args.json).write_text(to_json(report) + "\n")
    if args.junit:
        Path(args.junit).write_text(to_junit(report) + "\n")
    return 0 if report.ok else 1


def _generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = generate(out, args.component)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(written)} cases under {out} ({size / 1e6:.2f} MB in the folder)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    suite = check_manifest(golden)
    problems = verify(golden, args.component)
    for problem in problems:
        print(f"DRIFT {problem}")
    count = sum(not args.component or p.parent.name in args.component for p in find_cases(golden))
    if problems:
        print(f"FAILED: {len(problems)} problems; regenerate with `refimpl golden generate --out "
              f"{golden}` only if the change is intended, and say why in the commit")
        return 1
    print(f"OK: {count} committed cases (suite {suite}) regenerate: every field of case.json as "
          "committed, every tensor within the float64 noise floor")
    return 0


def _list(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    suite = check_manifest(golden)
    folders = find_cases(golden)
    for folder in folders:
        case = read_case(folder)
        print(f"{case.case_id:<50} {len(case.tensors):>3} tensors  {case.description}")
    print(f"{len(folders)} cases, suite {suite}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """`refimpl demo [NAME] ...`: the demo NAME of refimpl.demos.DEMOS (the first one when NAME is
    left out or the first argument is an option), its module imported only now (a demo pulls in
    every model)."""
    demo_args = list(args.demo_args)
    demo_args = demo_args[1:] if demo_args[:1] == ["--"] else demo_args
    name = next(iter(DEMOS))
    if demo_args and not demo_args[0].startswith("-"):
        name, demo_args = demo_args[0], demo_args[1:]
        if name not in DEMOS:
            raise UsageError(f"demo: no demo named {name!r}; the demos are {', '.join(DEMOS)}")
    module = importlib.import_module(DEMOS[name])
    status: int = module.main(demo_args)
    return status


CONFORM_HELP = """Check an implementation against the golden suite (spec/conformance.md).

Without --adapter or --results this is a self-check: the NumPy reference against its own goldens."""

CONFORM_EPILOG = """adapter signature: one function per component, taking and returning NumPy arrays by the
names the case uses (`refimpl golden list` and each case.json name them):

    def my_mhsa(inputs: dict[str, np.ndarray], params: dict[str, np.ndarray],
                config: dict, upstream: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...   # every output and gradient of the case (d_<input or param>); intermediates optional
        return {"out": out, "d_x": d_x, "d_Wq": d_Wq, ...}

    ADAPTER = {"mhsa": my_mhsa}        # in my_port/conformance.py

    refimpl conform --adapter my_port.conformance:ADAPTER --dtype float32

Raise NotImplementedError for a case you do not support (unsupported; fails only under --strict).
Exit status: 0 when at least one case was compared and none failed, 1 otherwise, 2 for a usage error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refimpl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"refimpl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    conform = commands.add_parser(
        "conform", help="check an implementation against the goldens", description=CONFORM_HELP,
        epilog=CONFORM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = conform.add_mutually_exclusive_group()
    source.add_argument("--adapter", metavar="PKG.MODULE:OBJECT",
                        help="your implementation: a dict from component name to function (or a function "
                             "returning one); see the signature below")
    source.add_argument("--results", metavar="DIR", help="folder of results: DIR/<component>/<case>/<name>.npy")
    conform.add_argument("--golden", metavar="DIR",
                         help="golden folder (default: the suite shipped with refimpl)")
    conform.add_argument("--component", action="append", default=[], help="only this component (repeatable)")
    conform.add_argument("--case", action="append", default=[],
                         help="only case ids matching this fnmatch pattern (repeatable)")
    conform.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                         help="float dtype of the inputs given and the outputs expected (default float64)")
    conform.add_argument("--strict", action="store_true", help="an unsupported case fails the run")
    conform.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                         help=f"per case; a case still running then is an ERROR (default {DEFAULT_TIMEOUT:g}; "
                              "0: no limit)")
    conform.add_argument("--expectations", metavar="FILE", help="TOML file of skip/xfail/tolerance entries")
    conform.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    conform.add_argument("--junit", metavar="FILE", help="also write the report as JUnit XML here")
    conform.add_argument("--verbose", action="store_true",
                         help="details of passing cases too, and an ERROR's full traceback")
    conform.set_defaults(run=_conform)

    golden = commands.add_parser("golden", help="generate, verify or list the golden fixtures")
    golden_commands = golden.add_subparsers(dest="golden_command", required=True)
    gen = golden_commands.add_parser("generate", help="write every registered case")
    gen.add_argument("--out", required=True, help="folder to write into (e.g. golden)")
    gen.add_argument("--component", action="append", default=[], help="only this component")
    gen.set_defaults(run=_generate)
    ver = golden_commands.add_parser("verify", help="regenerate and compare with the committed goldens")
    ver.add_argument("--golden", help="golden folder (default: the suite shipped with refimpl)")
    ver.add_argument("--component", action="append", default=[], help="only this component")
    ver.set_defaults(run=_verify)
    lst = golden_commands.add_parser("list", help="list the committed cases")
    lst.add_argument("--golden", help="golden folder (default: the suite shipped with refimpl)")
    lst.set_defaults(run=_list)
    demo = commands.add_parser("demo", add_help=False,
                               help=f"a paper's demo ({' | '.join(DEMOS)}; {next(iter(DEMOS))} by default): train "
                                    "every model, retrieve, print the paper's tables (`refimpl demo ulim --help`)")
    demo.add_argument("demo_args", nargs=argparse.REMAINDER)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:  # the demo parses its own options (argparse would eat `--help`)
        arguments = ["demo", "--", *arguments[1:]]
    args = build_parser().parse_args(arguments)
    try:
        with blas_threads(COMMAND_THREADS):
            result: int = args.run(args)
    except (GoldenError, ValueError, ImportError) as error:
        print(f"refimpl: error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
