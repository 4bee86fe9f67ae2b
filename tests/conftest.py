"""Hypothesis profiles: `ci` (the default: quick, derandomized, no deadline on noisy machines) and
`dev` (thorough). Choose with HYPOTHESIS_PROFILE=dev."""

import os

from hypothesis import HealthCheck, settings

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

pytest_plugins = ["refimpl.conformance.pytest_plugin"]
