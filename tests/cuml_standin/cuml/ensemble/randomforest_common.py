"""cuml.ensemble.randomforest_common.BaseRandomForestModel: the parameters, their checks at fit
and the meaning of ``max_depth=None``, from cuML 26.10,
python/cuml/cuml/ensemble/randomforest_common.pyx (rapidsai/cuml @ 342457bc; ``_fit_forest``).
The trees are scikit-learn's (exact splits: cuML's ``n_bins`` histogram is not reproduced).
"""

from __future__ import annotations

import builtins
import numbers

import numpy as np

from cuml.internals.base import Base
from cuml.internals.validation import check_random_seed

_SPLIT_CRITERIA = {"gini": "gini", "0": "gini", "entropy": "entropy", "1": "entropy"}

# cuML 26.04 and later take max_depth=None as unlimited; 25.02-26.02 compared it with 0
# (``if self.max_depth <= 0``) and so failed on None with a TypeError. Tests switch it.
MAX_DEPTH_NONE_ACCEPTED = True


class BaseRandomForestModel(Base):
    @classmethod
    def _get_param_names(cls):
        return [
            *super()._get_param_names(),
            "split_criterion",
            "n_estimators",
            "bootstrap",
            "max_samples",
            "max_depth",
            "max_leaves",
            "max_features",
            "n_bins",
            "min_samples_leaf",
            "min_samples_split",
            "min_impurity_decrease",
            "max_batch_size",
            "random_state",
            "n_streams",
            "oob_score",
        ]

    def __init__(
        self,
        *,
        split_criterion,
        n_estimators=100,
        bootstrap=True,
        max_samples=1.0,
        max_depth=None,
        max_leaves=-1,
        max_features="sqrt",
        n_bins=128,
        min_samples_leaf=1,
        min_samples_split=2,
        min_impurity_decrease=0.0,
        max_batch_size=4096,
        random_state=None,
        n_streams=4,
        oob_score=False,
        verbose=False,
        output_type=None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.split_criterion = split_criterion
        self.n_estimators = n_estimators
        self.bootstrap = bootstrap
        self.max_samples = max_samples
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.max_features = max_features
        self.n_bins = n_bins
        self.min_samples_leaf = min_samples_leaf
        self.min_samples_split = min_samples_split
        self.min_impurity_decrease = min_impurity_decrease
        self.max_batch_size = max_batch_size
        self.random_state = random_state
        self.n_streams = n_streams
        self.oob_score = oob_score

    def _sklearn_forest(self):
        """cuML's checks in ``_fit_forest``, in its order, then the scikit-learn forest to grow."""
        from sklearn.ensemble import RandomForestClassifier as SkForest

        max_depth = self.max_depth
        if not MAX_DEPTH_NONE_ACCEPTED and max_depth <= 0:  # cuML <= 26.02: a TypeError for None
            raise ValueError("Must specify max_depth >0 ")
        if max_depth is None:
            max_depth_c = np.iinfo(np.int32).max
        elif not isinstance(max_depth, int) or max_depth <= 0:  # a NumPy integer is not an int
            raise ValueError(f"max_depth must be a positive integer or None (unlimited); got {max_depth!r}")
        else:
            max_depth_c = max_depth
        if callable(self.oob_score):
            raise ValueError("oob_score must be a boolean. Custom scorer functions are not supported.")
        if self.oob_score and not self.bootstrap:
            raise ValueError("Out of bag estimation only available if bootstrap=True")
        n_streams = self.n_streams
        if isinstance(n_streams, (builtins.bool, np.bool_)) or not isinstance(n_streams, numbers.Integral):
            raise TypeError(f"n_streams must be a positive integer; got {n_streams!r}")
        if n_streams <= 0:
            raise ValueError(f"n_streams must be a positive integer; got {n_streams!r}")
        seed = 0 if self.random_state is None else check_random_seed(self.random_state)
        criterion = _SPLIT_CRITERIA.get(str(self.split_criterion))
        if criterion is None:
            raise NotImplementedError(f"the stand-in grows only gini or entropy trees, got {self.split_criterion!r}")
        return SkForest(
            n_estimators=self.n_estimators,
            criterion=criterion,
            max_depth=max_depth_c,
            max_leaf_nodes=None if self.max_leaves == -1 else self.max_leaves,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            min_samples_split=self.min_samples_split,
            min_impurity_decrease=self.min_impurity_decrease,
            bootstrap=self.bootstrap,
            max_samples=None if self.max_samples == 1.0 else self.max_samples,
            oob_score=self.oob_score,
            random_state=seed,
            n_jobs=1,
        )
