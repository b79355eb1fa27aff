"""Build hook: the wheel carries the repository's configs/ as the package's presets (mtbert/presets/).

configs/ stays the one source of the presets; `mtbert.presets` reads it in place in a checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithPresets(build_py):
    """build_py, then configs/ copied into the built package as mtbert/presets/ (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = Path(__file__).resolve().parent / "configs"
        shutil.copytree(source, Path(self.build_lib) / "mtbert" / "presets", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithPresets})
