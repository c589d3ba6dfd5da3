"""Only a build hook: every bit of package metadata lives in setup.cfg.

It ships ``requests_azguard_autostart.pth`` into site-packages (the root of the
wheel), for ``pip install .`` and for ``pip install -e .`` alike, so that
``AZGUARD_AUTO=1`` guards any Python program of the environment.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "requests_azguard_autostart.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        source = str(Path(__file__).parent / PTH)
        if getattr(self, "editable_mode", False):
            # PEP 660: the editable wheel is assembled from the install
            # directory, while build_lib is thrown away.
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.copy_file(source, str(Path(target, PTH)), preserve_mode=False)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, str(Path(self.build_lib, PTH))]


setup(cmdclass={"build_py": build_py_with_pth})
