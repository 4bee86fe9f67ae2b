"""One build step on top of pyproject.toml: ship the golden suite and the spec inside the wheel.

`golden/` and `spec/` stay at the top of the repository (they are read there by people and by other
languages), and `build_py` copies them into the wheel as `refimpl/_suite/golden` and `refimpl/_suite/spec`,
where `refimpl.suite` finds them through `importlib.resources`. MANIFEST.in puts both folders into the
sdist, so a wheel built from the sdist (or from a git URL) carries them too. An editable install builds no
copy: `refimpl.suite` then reads the checkout's own folders. README "Installing" says why this mechanism.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SUITE_FOLDERS = ("golden", "spec")


class build_py_with_suite(build_py):  # noqa: N801 (setuptools command classes are named like commands)
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the package is the checkout: refimpl.suite reads golden/ and spec/ there
            return
        root = Path(__file__).resolve().parent
        for name in SUITE_FOLDERS:
            target = Path(self.build_lib) / "refimpl" / "_suite" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target)


setup(cmdclass={"build_py": build_py_with_suite})
