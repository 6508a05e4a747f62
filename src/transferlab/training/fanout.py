"""Where a stage's independent races run: in this process, or as tasks on a Ray cluster.

`RAY_ADDRESS` (Ray's own variable, e.g. `127.0.0.1:6379` or `ray://head:10001`) names a cluster;
without it every race runs in-process, as always. A race is deterministic (its seeds are in the
plan), so a point gives the same rows wherever it runs and the choice is not a param: DVC's view
of the stage does not change with it. The driver (the stage process) ships each task the
variant, the protocol, the repetition plan, the init model's `.keras` bytes and the target
arrays; the worker loads the model with `safe_mode=True`, runs `race.race` and returns the
per-repetition results. A selffer job's init models (one per repetition) are its source job's
chosen models, which that task returns as a second Ray object that Ray hands to the selffer tasks
(never back through the driver). The stage collects results in point order, so MLflow records the
same runs, in the same order, as in-process, and writes its outputs only once every task is back:
a lost worker or task fails the stage with one line and nothing is written.

Workers get this package through Ray's `runtime_env` (`py_modules`), so they run the driver's
code, not whatever is installed on the cluster; they need the same third-party packages
(`pip install -e .[ray]` on every node, or a matching container image).
"""
from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferlab.errors import ClusterError, TransferlabError
from transferlab.errors import first_line as _first_line

if TYPE_CHECKING:
    import numpy as np

    from transferlab.config import NetworkSpec, Protocol, VariantSpec
    from transferlab.data.repetitions import Repetition
    from transferlab.training.results import RepetitionResult

ADDRESS_VARIABLE = "RAY_ADDRESS"
CONNECT_SECONDS = 10.0


Job = tuple["VariantSpec", "Protocol", int]  # a race: variant, protocol, labels per class


def address() -> str | None:
    return os.environ.get(ADDRESS_VARIABLE) or None


def _check_reachable(where: str) -> None:
    """Fail in seconds with one line when nothing listens at RAY_ADDRESS (Ray itself retries for minutes)."""
    if where == "auto":
        return
    parts = urllib.parse.urlsplit(where if "://" in where else f"tcp://{where}")
    host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            pass
    except OSError as error:
        raise ClusterError(f"{ADDRESS_VARIABLE}={where}: no Ray cluster answers there ({error.strerror or error});"
                           " start one (`ray start --head`) or unset the variable to train in-process") from None


def _race_task(job: Job, plan: Sequence[Repetition], init: bytes | list[bytes], network: NetworkSpec,
               arrays: Mapping[str, np.ndarray], keep_models: bool = False, patterns: Sequence[str] | None = None) -> Any:
    """On a worker: one race, from the init model's bytes (or one model's per repetition), loaded as untrusted input.

    `keep_models`: also return the chosen model of each repetition as `.keras` bytes, renamed as an
    init model (`networks.as_init_model`): the selffer networks B_r later tasks reuse layers from.
    """
    import tempfile

    from transferlab.models import networks, zoo
    from transferlab.training import race

    variant, protocol, labels_per_class = job
    with tempfile.TemporaryDirectory() as folder:
        def load(model_bytes: bytes, name: str) -> Any:
            path = Path(folder) / f"{name}.keras"
            path.write_bytes(model_bytes)
            return zoo.load_keras(path)

        init_model = load(init, "init") if isinstance(init, bytes) else [load(b, f"init{r}") for r, b in enumerate(init)]
        outcome = race.race(variant, init_model, network, protocol, arrays, labels_per_class, plan, patterns)
        if not keep_models:
            return outcome.results
        chosen = []
        for r, model in enumerate(outcome.models):
            path = Path(folder) / f"chosen{r}.keras"
            networks.as_init_model(model).save(path)
            chosen.append(path.read_bytes())
        return outcome.results, chosen


def race_on_cluster(jobs: Sequence[Job], plan: Sequence[Repetition], init_files: Mapping[str, Path],
                    networks: Mapping[str, NetworkSpec], arrays: Mapping[str, np.ndarray],
                    selffer_from: Mapping[int, int] | None = None,
                    patterns: Mapping[str, Sequence[str] | None] | None = None) -> Iterator[list[RepetitionResult]]:
    """Run each job as a Ray task on the cluster at RAY_ADDRESS; yield their results in job order.

    `selffer_from`: job number -> the earlier job whose chosen models (one per repetition) it reuses
    layers from instead of its init model's. That job's task also returns them as a Ray object,
    passed straight to the tasks that need it: Ray starts each once its source is done.
    `patterns`: init model name -> its declared blocks (`model_files.<name>.blocks`); absent: found.
    """
    after = dict(selffer_from or {})
    assert all(source < number for number, source in after.items()), "a selffer job must come after its source"
    where = address()
    assert where is not None
    _check_reachable(where)
    import ray

    import transferlab

    try:
        ray.init(address=where, runtime_env={"py_modules": [str(Path(transferlab.__file__).parent)]},
                 logging_level="ERROR", log_to_driver=False, configure_logging=True)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError …
        raise ClusterError(f"{ADDRESS_VARIABLE}={where}: cannot join the Ray cluster ({_first_line(error)})") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_race_task)  # a lost worker fails the stage; DVC reruns it
        shared: dict[str, Any] = {"plan": ray.put(list(plan)), "arrays": ray.put(dict(arrays))}
        models = {name: ray.put(Path(path).read_bytes()) for name, path in init_files.items()}
        futures, chosen = [], {}
        for number, job in enumerate(jobs):
            init = chosen[after[number]] if number in after else models[job[0].init_from]
            arguments = (job, shared["plan"], init, networks[job[0].init_from], shared["arrays"])
            # a selffer job reuses the chosen networks B_r, whose blocks are found (as in-process)
            declared = None if number in after else (patterns or {}).get(job[0].init_from)
            if number in after.values():
                result, chosen[number] = task.options(num_returns=2).remote(*arguments, True, declared)
            else:
                result = task.remote(*arguments, False, declared)
            futures.append(result)
        for number, future in enumerate(futures):
            try:
                yield ray.get(future)
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, TransferlabError) else None
                if cause is not None:
                    raise cause from None  # the one-line error the race would have raised in-process
                raise ClusterError(f"Ray task {number + 1}/{len(jobs)} failed: {_first_line(error)}") from None
            except ray.exceptions.RayError as error:  # worker or node lost, object lost, …
                raise ClusterError(f"{ADDRESS_VARIABLE}={where}: Ray lost task {number + 1}/{len(jobs)}"
                                   f" ({type(error).__name__}: {_first_line(error)}); nothing was written") from None
    finally:
        ray.shutdown()
