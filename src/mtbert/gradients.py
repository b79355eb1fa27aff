"""`mtbert.gradients`: the public name of the gradient methods of `mtbert.methods.aggregators` (re-exported)."""

from mtbert.methods.aggregators import (
    AGGREGATORS,
    TORCHJD_INSTALL_HINT,
    Aggregator,
    GradVac,
    MissingDependencyError,
    NashMTL,
    aligned_mtl,
    cagrad,
    diagnose,
    imtl_g,
    make_aggregator,
    mgda,
    pcgrad,
    pcgrad_projected,
    pcgrad_weights,
    sum_rows,
    upgrad,
)

__all__ = ["AGGREGATORS", "TORCHJD_INSTALL_HINT", "Aggregator", "GradVac", "MissingDependencyError", "NashMTL",
           "aligned_mtl", "cagrad", "diagnose", "imtl_g", "make_aggregator", "mgda", "pcgrad", "pcgrad_projected",
           "pcgrad_weights", "sum_rows", "upgrad"]
