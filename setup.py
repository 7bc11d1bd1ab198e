"""Package discovery: every package under hspi_onnx/, plus the adapters (runtimes/) and the zoo
(models/), which install as hspi_onnx.runtimes and hspi_onnx.models. The rest of the metadata is
in pyproject.toml. tests/test_wheel.py builds the wheel and imports every module from it, so a
package left out of the wheel fails the tests."""

from setuptools import find_packages, setup

MAPPED = {"hspi_onnx.runtimes": "runtimes", "hspi_onnx.models": "models"}


def packages() -> list[str]:
    found = find_packages(include=["hspi_onnx", "hspi_onnx.*"])
    for name, folder in MAPPED.items():
        found += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


setup(packages=packages(), package_dir=MAPPED)
