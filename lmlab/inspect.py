"""Deprecated: `lmlab.inspect` is now `lmlab.interpret` (a name that does not shadow the
standard library's `inspect`). This alias goes in the next release."""

import warnings

from .interpret import *  # noqa: F401,F403

warnings.warn("lmlab.inspect is now lmlab.interpret; import that (this alias goes in the next "
              "release)", DeprecationWarning, stacklevel=2)
