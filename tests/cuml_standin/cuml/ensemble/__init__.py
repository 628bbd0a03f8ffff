from cuml.ensemble.randomforestclassifier import RandomForestClassifier

__all__ = ["RandomForestClassifier"]
