"""The software version recorded in every decision (evidence: which release decided) and exported as a metric."""

from __future__ import annotations

import functools
import os
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "aml-screener"
# Set by the image build (docker/Dockerfile: the source revision) so a decision names the exact build, not only the
# release it claims to be.
REVISION_VARIABLE = "AML_BUILD_REVISION"


@functools.cache
def software_version() -> str:
    """``aml-screener 0.1.0`` (``+<revision>`` when the build recorded one)."""
    try:
        release = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown"
    revision = os.environ.get(REVISION_VARIABLE, "").strip()
    return f"{DISTRIBUTION} {release}+{revision}" if revision else f"{DISTRIBUTION} {release}"
