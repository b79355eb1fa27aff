"""`mtbert.gradients`: the public name of `mtbert.methods.aggregators` (the same module object)."""

import sys

from mtbert.methods import aggregators

sys.modules[__name__] = aggregators
