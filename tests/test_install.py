"""A non-editable install finds the config tree as package data, from any working directory."""
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def running_site_packages() -> list[str]:
    """Where the running interpreter's installed packages live: its environment's site-packages (a venv
    made with --system-site-packages includes the base ones) and the user's.

    Listed in a .pth file these become plain sys.path entries: the .pth files inside them are not run,
    so an editable install of the checkout there (a .pth import hook) stays invisible."""
    dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return [d for d in dirs if Path(d).is_dir()]


@pytest.mark.slow
def test_wheel_carries_conf_and_runs_from_a_foreign_folder(tmp_path):
    src = tmp_path / "src"  # a clean copy: setuptools writes build/ beside the sources
    for name in ("conf", "resnet_cifar", "multirun_analysis"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("resnet_cifar-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    conf = {n for n in names if n.startswith("resnet_cifar/conf/") and n.endswith(".yaml")}
    shipped = {f"resnet_cifar/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert conf == shipped and "resnet_cifar/conf/config.yaml" in conf
    assert {"multirun_analysis/references.csv", "resnet_cifar/models/preact.py", "resnet_cifar/data/cifar.py",
            "resnet_cifar/trackers/mlflow.py"} <= set(names)  # the subpackages and the report's data

    # a fresh venv that sees the packages of the running environment (torch, hydra, ...), whatever kind
    # of environment that is (the machine's Python, a venv, conda), but not the checkout
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "running_environment.pth").write_text("\n".join(running_site_packages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import resnet_cifar; print(resnet_cifar.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where, where
    job = subprocess.run([str(python), "-m", "resnet_cifar.train", "--cfg", "job", "depth=56", "arch=plain"],
                         cwd=elsewhere, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    assert "depth: 56" in job.stdout and "_target_: resnet_cifar.models.resnet.cifar_plain" in job.stdout \
        and "max_iters: 64000" in job.stdout
    references = subprocess.run([str(python), "-c", "from multirun_analysis.table import references; "
                                 "print(len(references()))"], cwd=elsewhere, capture_output=True, text=True)
    assert references.stdout.strip() == "10", references.stderr
