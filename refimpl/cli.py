"""The `refimpl` command.

    refimpl conform                      check the NumPy reference against the committed goldens
    refimpl conform --adapter pkg.mod:obj   check your implementation (a dict component -> fn)
    refimpl conform --results DIR        check outputs any program wrote as DIR/<component>/<case>/*.npy
    refimpl golden generate --out DIR    write every golden case
    refimpl golden verify                regenerate into a scratch folder, compare with golden/
    refimpl golden list                  the committed cases
    refimpl demo [--quick]               ULIM end to end: train every model, retrieve, print the tables

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

from refimpl.conformance.expectations import Expectations, load_expectations
from refimpl.conformance.report import format_table, to_json, to_junit
from refimpl.conformance.runner import Adapter, reference_adapter, run_conformance, run_results
from refimpl.golden import default_golden_root
from refimpl.golden.format import GoldenError, find_cases, read_case
from refimpl.golden.generate import generate, verify
from refimpl.threads import COMMAND_THREADS, blas_threads


def load_adapter(spec: str) -> Adapter:
    """`pkg.mod:obj` -> the mapping it names (or that the zero-argument callable it names returns)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--adapter: expected 'package.module:object', got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the adapter may live in the current folder
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"--adapter: {module_name} has no attribute {attribute!r}") from None
    if not isinstance(obj, Mapping) and callable(obj):
        obj = obj()
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"--adapter: {spec} is a {type(obj).__name__}; expected a mapping from component "
            "name to function, or a function returning one"
        )
    return obj


def _conform(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    expectations = load_expectations(Path(args.expectations)) if args.expectations else Expectations()
    common = dict(golden_root=golden, components=args.component, cases=args.case, dtype=args.dtype,
                  expectations=expectations)
    if args.results:
        report = run_results(Path(args.results), **common)
    else:
        adapter = load_adapter(args.adapter) if args.adapter else reference_adapter()
        report = run_conformance(adapter, **common)
        if not args.adapter:
            report.source = "NumPy reference"
    print(format_table(report, verbose=args.verbose))
    if args.json:
        Path(args.json).write_text(to_json(report) + "\n")
    if args.junit:
        Path(args.junit).write_text(to_junit(report) + "\n")
    return 0 if report.ok and report.results else 1


def _generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = generate(out, args.component)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(written)} cases under {out} ({size / 1e6:.2f} MB in the folder)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    problems = verify(golden, args.component)
    for problem in problems:
        print(f"DRIFT {problem}")
    count = sum(not args.component or p.parent.name in args.component for p in find_cases(golden))
    if problems:
        print(f"FAILED: {len(problems)} problems; regenerate with `refimpl golden generate --out "
              f"{golden}` only if the change is intended, and say why in the commit")
        return 1
    print(f"OK: {count} committed cases regenerate within the float64 noise floor")
    return 0


def _list(args: argparse.Namespace) -> int:
    golden = Path(args.golden) if args.golden else default_golden_root()
    for folder in find_cases(golden):
        case = read_case(folder)
        print(f"{case.case_id:<50} {len(case.tensors):>3} tensors  {case.description}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from refimpl.demo import main as demo_main  # imported here: the demo pulls in every model

    demo_args = list(args.demo_args)
    return demo_main(demo_args[1:] if demo_args[:1] == ["--"] else demo_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refimpl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    conform = commands.add_parser("conform", help="check an implementation against the goldens")
    source = conform.add_mutually_exclusive_group()
    source.add_argument("--adapter", help="pkg.module:object, a dict from component to function")
    source.add_argument("--results", help="folder of results: <component>/<case>/<name>.npy")
    conform.add_argument("--golden", help="golden folder (default: the checkout's golden/)")
    conform.add_argument("--component", action="append", default=[], help="only this component")
    conform.add_argument("--case", action="append", default=[], help="only case ids matching this pattern")
    conform.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    conform.add_argument("--expectations", help="TOML file of skip/xfail/tolerance entries")
    conform.add_argument("--json", help="also write the report as JSON here")
    conform.add_argument("--junit", help="also write the report as JUnit XML here")
    conform.add_argument("--verbose", action="store_true", help="details of passing cases too")
    conform.set_defaults(run=_conform)

    golden = commands.add_parser("golden", help="generate, verify or list the golden fixtures")
    golden_commands = golden.add_subparsers(dest="golden_command", required=True)
    gen = golden_commands.add_parser("generate", help="write every registered case")
    gen.add_argument("--out", required=True, help="folder to write into (e.g. golden)")
    gen.add_argument("--component", action="append", default=[], help="only this component")
    gen.set_defaults(run=_generate)
    ver = golden_commands.add_parser("verify", help="regenerate and compare with the committed goldens")
    ver.add_argument("--golden", help="golden folder (default: the checkout's golden/)")
    ver.add_argument("--component", action="append", default=[], help="only this component")
    ver.set_defaults(run=_verify)
    lst = golden_commands.add_parser("list", help="list the committed cases")
    lst.add_argument("--golden", help="golden folder (default: the checkout's golden/)")
    lst.set_defaults(run=_list)
    demo = commands.add_parser("demo", add_help=False,
                               help="train every model on synthetic data, retrieve, print the ULIM tables "
                                    "(`refimpl demo --help` for its options)")
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
