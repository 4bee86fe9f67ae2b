"""The papers' demos, one module each with `main(argv) -> int`: `refimpl demo [ulim|umi|ifa]`.

`DEMOS` maps a demo's name to its module; the CLI imports the module only when it runs (a demo
pulls in every model). The first entry is the default (`refimpl demo` alone runs ULIM's).
"""

DEMOS: dict[str, str] = {
    "ulim": "refimpl.demos.ulim",
    "umi": "refimpl.demos.umi",
    "ifa": "refimpl.demos.ifa",
}
"""Demo name -> module with `main(argv: list[str]) -> int`. A new paper's demo adds one entry."""

__all__ = ["DEMOS"]
