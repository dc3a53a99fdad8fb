"""The randomized tests' shared settings: CHATFILE_FUZZ_EXAMPLES examples per class (each file names its
default, sized for make test; the long runs set the variable), derandomized so that a failure repeats,
no example database, no deadline, and no health checks (the generators build whole files and bodies)."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_examples(default: int) -> int:
    return int(os.environ.get("CHATFILE_FUZZ_EXAMPLES", str(default)))


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
