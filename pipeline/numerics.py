"""How TensorFlow computes here, decided once for every process that trains.

The batched engine equals Model.fit bit for bit only when both run the same CPU kernels.
TensorFlow 2.21 turns oneDNN on by default on AVX-512 CPUs (and wherever
TF_ENABLE_ONEDNN_OPTS=1), and its kernels round differently (1-8 ulp). So the project
turns oneDNN off before TensorFlow is imported, whatever the environment says: the same
numbers on every x86-64 CPU. Runs record what was in force (`numerics_tags`).

TensorFlow also prints start-up lines from C++ (absl, CUDA probes) before Python logging
exists; they are caught at the file-descriptor level while TensorFlow loads and initializes
its devices, and only those lines are dropped.

Threads: a training step of a batched net with one hidden layer has no ops that could run
side by side, so a second inter-op thread only spins, on the core that the writer process
(or a parallel job) needs. A process that trains only such nets runs one inter-op thread;
the threads within an op, which decide how sums are split, are left as they are.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from functools import cache

log = logging.getLogger("deadunits")

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ENVIRONMENT = {
    ONEDNN_ENV: "0",  # forced: exactness across CPUs is the point
}
DEFAULT_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # a user may ask for more
}
# Start-up lines of TensorFlow's C++ runtime on a CPU-only machine: not warnings for a user.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "cudart_stub",
    "Could not find cuda drivers",
    "cuInit",
    "cuda_platform",
    "cuda_dnn",
    "cuda_fft",
    "cuda_blas",
    "Unable to register cu",
    "computation placer already registered",
    "cpu_feature_guard",
    "rebuild TensorFlow with the appropriate compiler flags",
    "TF-TRT Warning",
)
INTER_OP_ENV = "TF_NUM_INTEROP_THREADS"  # TensorFlow's own setting; a user's value wins
TAG_TENSORFLOW_VERSION = "tensorflow_version"
TAG_ONEDNN = "onednn"

# Whether something imported TensorFlow before this package could set its environment.
PREIMPORTED = "tensorflow" in sys.modules
_inter_op_threads: int | None = None  # planned by `plan_threads`; None: TensorFlow's default
_threads_planned = False


def set_environment() -> None:
    """Environment for TensorFlow; runs when `pipeline` is imported, before TensorFlow is."""
    os.environ.update(ENVIRONMENT)
    for name, value in DEFAULT_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@contextmanager
def _without_startup_noise():
    """Capture file descriptor 2, then pass on every line that is not start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines()
                if line.strip() and not any(noise in line for noise in STARTUP_NOISE)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


@cache
def import_tensorflow():
    """(tensorflow, keras), loaded quietly with the project's numerics; import them through this."""
    set_environment()
    with _without_startup_noise():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe runs here, not at the first op
    _apply_threads(tf)
    # Both engines trace a new program per model or per cell shape: TensorFlow's retracing
    # warning is expected here, and would bury the sweep's progress bar.
    tf.get_logger().setLevel("ERROR")
    return tf, keras


def inter_op_threads(cfgs) -> int | None:
    """Inter-op threads for a process that trains these configs: one when every net is a
    batched net with one hidden layer (see the module's docstring), else TensorFlow's."""
    single = all(cfg.train.engine == "batched" and len(cfg.model.hidden_sizes) == 1 for cfg in cfgs)
    return 1 if single and INTER_OP_ENV not in os.environ else None


def plan_threads(cfgs) -> None:
    """Decide this process's inter-op threads from what it will train; the first call
    decides (a sweep plans for all its cells before its first job). Takes effect when
    TensorFlow starts its runtime, at its first op, and not after."""
    global _inter_op_threads, _threads_planned
    if _threads_planned:
        return
    _threads_planned = True
    _inter_op_threads = inter_op_threads(list(cfgs))
    if import_tensorflow.cache_info().currsize:  # imported already: apply now, if still can
        _apply_threads(import_tensorflow()[0])


def _apply_threads(tf) -> None:
    if _inter_op_threads is None:
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(_inter_op_threads)
    except RuntimeError:  # the runtime started already (an earlier job in this process)
        log.debug("inter-op threads left as they are: TensorFlow's runtime has started")


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels are on in this process (TensorFlow's own answer)."""
    import_tensorflow()
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def numerics_tags() -> dict[str, str]:
    """What decides a run's last bits: TensorFlow's version and whether oneDNN was on."""
    tf, _ = import_tensorflow()
    return {TAG_TENSORFLOW_VERSION: tf.__version__, TAG_ONEDNN: str(onednn_enabled()).lower()}


def check_exact_engines() -> None:
    """Say, once and in one line, when the batched engine cannot equal the keras engine."""
    if onednn_enabled():
        _warn_onednn_on()


@cache
def _warn_onednn_on() -> None:
    log.warning(
        "train.engine=batched: TensorFlow was imported with oneDNN on before deadunits set "
        "%s=0, so batched runs may differ from keras runs by a few ulp (tag onednn=true); "
        "import pipeline before tensorflow for exact runs",
        ONEDNN_ENV,
    )
