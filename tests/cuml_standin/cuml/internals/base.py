"""cuml.internals.base.Base: parameters through ``_get_param_names`` (cuML 26.10,
python/cuml/cuml/internals/base.py)."""

from __future__ import annotations


class Base:
    """The base of cuML's estimators: keyword-only ``verbose`` and ``output_type``; every
    subclass lists its parameters in ``_get_param_names`` (get_params and set_params read it)."""

    def __init__(self, *, verbose=False, output_type=None):
        self.verbose = verbose
        self.output_type = output_type

    @classmethod
    def _get_param_names(cls):
        return ["verbose", "output_type"]

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid_params = self._get_param_names()
        for key, value in params.items():
            if key not in valid_params:
                raise ValueError(f"Invalid parameter {key!r} for `{type(self).__name__}`")
            setattr(self, key, value)
        return self

    def __sklearn_tags__(self):
        """cuML's ``TagsMixin`` (internals/mixins.py): scikit-learn's ``check_is_fitted``, which
        cuML's methods call, reads them."""
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), input_tags=InputTags(two_d_array=True))

    def __repr__(self):
        return f"{type(self).__name__}()"
