import os

import pytest
import torch

# Without a GPU the Triton kernels run in the interpreter, and that must be chosen before triton is first
# imported: triton.language's own @jit helpers (tl.sigmoid, tl.cdiv, the combine function of tl.sum) are
# decorated at import, compiled or interpreted for the rest of the process. Importing torch does not import
# triton, but the first AdamW step does, so a test of the models that ran before the kernel tests would
# otherwise leave them unable to call those helpers. CPU code paths never pick Triton by themselves ("auto" is
# the torch scan and the reference conv/decode off CUDA), so this changes nothing else.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    try:  # import it now, so that no test that unsets the variable can be the first to import it
        import triton  # noqa: F401
    except ImportError:
        pass

# Small, deterministic CPU runs: keep torch from oversubscribing the 2 cores CI has.
torch.set_num_threads(min(2, os.cpu_count() or 1))


try:
    import pytest_benchmark  # noqa: F401
except ImportError:  # the dev extra is not installed: plain `pytest` still runs everything else
    collect_ignore_glob = ["benchmarks/*"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Benchmarks time nothing unless asked (`--benchmark-enable`): CI and `make test` run them once as tests.
    # Set here rather than in addopts, which would fail without the plugin. tryfirst: before the plugin reads it.
    if config.pluginmanager.hasplugin("benchmark") and not config.getoption("benchmark_enable", False):
        config.option.benchmark_disable = True


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
