"""The pipeline's stages, one module each: `python -m stages.<name>`.

DVC runs a stage's command with whatever `python` the PATH names; it activates no environment
(treeverse/dvc#9120). So `.venv/bin/dvc repro` from a shell without the venv would start the
system Python, and every stage would die in a ModuleNotFoundError traceback. This package is
imported before the stage's module, so it checks first: an interpreter without the project's
packages hands over to the project's `.venv/bin/python` when there is one, else stops with
one line saying what to do.
"""
import importlib.util
import os
import sys
from pathlib import Path

NEEDED = ("transferlab", "numpy", "pandas", "pydantic", "ruamel.yaml", "mlflow", "keras", "sklearn", "matplotlib", "tqdm")
VENV = Path(".venv")  # where `make` installs the project (stages run at the repository root)


def _missing() -> list[str]:
    found = []
    for name in NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                found.append(name)
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found.append(name)
    return found


if missing := _missing():
    venv_python = VENV / "bin" / "python"
    if venv_python.is_file() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(venv_python, [str(venv_python), *sys.orig_argv[1:]])
    sys.exit(f"error: {sys.executable} cannot import {', '.join(missing)}: run the pipeline with `make run`,"
             " or put the project's environment first in PATH (`source .venv/bin/activate`)")

# Under `make run` a warm stage server holds TensorFlow and MLflow already imported: hand the whole
# stage over to it now, before the stage module's own imports (MLflow, pandas: seconds) load here.
from transferlab.launch import warm  # noqa: E402

warm.handover()
