"""Hypothesis profiles: `ci` (the default: quick, derandomized, no deadline on noisy machines) and
`dev` (thorough). Choose with HYPOTHESIS_PROFILE=dev."""

import os

# Before NumPy loads: the suite's matrices are small, and a threaded OpenBLAS on a busy 2-core machine
# spends most of its time waiting for a core (train.limit_blas_threads measures 40x); one thread also
# keeps reduction orders, and so the regenerated goldens, the same from run to run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The conformance plugin comes through refimpl's `pytest11` entry point (pip install -e . registers it);
# naming it here as well would register it twice. pytester runs the plugin in toy projects.
pytest_plugins = ["pytester"]
