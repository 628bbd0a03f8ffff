"""The truncated forest grid (reduction.forest_grid, method "truncate") against real forests.

* exact: cut at or below the trees' own depth, the truncated forest is ``predict_proba``;
* by hand: the distribution used at depth d is the one stored at the node the row reaches at
  depth d (a hand-built tree), and that is the bootstrap-weighted class fraction of the
  training rows reaching that node, as a tree grown to depth d would predict there;
* warm start: the grid grows its forest in batches; that gives the same trees as one fit;
* in distribution, with several seeds: every cell's validation accuracy from the cut forest
  agrees with real forests grown with ``max_depth=d`` within the seed-to-seed spread, and the
  same test rejects a cut one level too shallow (so it can fail).

Tolerances, not bit-equality, wherever two different computations meet.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from reduction.forest_grid import (
    DepthVotes,
    ForestGridSearch,
    node_probabilities,
    nodes_at_depths,
    truncated_proba,
)

TOLERANCE = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def five_classes():
    """600 training and 2,000 validation rows of a 5-class problem on which accuracy keeps
    rising with depth (so that cutting at the wrong depth shows)."""
    X, y = make_classification(n_samples=2600, n_features=20, n_informative=8, n_redundant=4, n_classes=5,
                               n_clusters_per_class=2, flip_y=0.03, class_sep=1.0, random_state=0)
    X = X.astype(np.float32)
    return X[:600], y[:600], X[600:], y[600:]


# ---- exact --------------------------------------------------------------------------------


def test_uncut_forest_is_predict_proba(five_classes):
    X, y, X_val, _ = five_classes
    forest = RandomForestClassifier(12, random_state=4, n_jobs=1).fit(X, y)
    deepest = max(tree.get_depth() for tree in forest.estimators_)
    for n_trees in (1, 5, 12):
        alone = RandomForestClassifier(n_trees, random_state=4, n_jobs=1).fit(X, y)
        proba = truncated_proba(forest, X_val, [deepest, deepest + 7], n_trees=n_trees)
        for layer in proba:
            np.testing.assert_allclose(layer, alone.predict_proba(X_val), **TOLERANCE)
    # Trees grown to depth 3 and cut at 3 (or deeper) are those trees.
    shallow = RandomForestClassifier(6, max_depth=3, random_state=4, n_jobs=1).fit(X, y)
    for layer in truncated_proba(shallow, X_val, [3, 9], n_jobs=2):
        np.testing.assert_allclose(layer, shallow.predict_proba(X_val), **TOLERANCE)


def test_node_probabilities_at_the_leaves_are_the_trees_predictions(five_classes):
    X, y, X_val, _ = five_classes
    tree = RandomForestClassifier(1, random_state=0, n_jobs=1).fit(X, y).estimators_[0]
    np.testing.assert_allclose(node_probabilities(tree)[tree.apply(X_val)], tree.predict_proba(X_val), **TOLERANCE)


def test_votes_do_not_depend_on_the_thread_count_or_the_batches(five_classes):
    X, y, X_val, _ = five_classes
    forest = RandomForestClassifier(9, random_state=1, n_jobs=1).fit(X, y)
    depths = [0, 2, 5, 40]
    whole = DepthVotes(X_val, depths, forest.n_classes_, n_jobs=1).add(forest.estimators_)
    batched = DepthVotes(X_val, depths, forest.n_classes_, n_jobs=3)
    for start, stop in ((0, 2), (2, 7), (7, 9)):
        batched.add(forest.estimators_[start:stop])
    assert batched.n_trees == 9 and len(batched.blocks) == 3
    np.testing.assert_allclose(batched.proba(), whole.proba(), **TOLERANCE)
    # Depth 0 is the root: every row gets the mean of the trees' root distributions.
    roots = np.mean([node_probabilities(tree)[0] for tree in forest.estimators_], axis=0)
    np.testing.assert_allclose(whole.proba()[0], np.broadcast_to(roots, whole.proba()[0].shape), **TOLERANCE)


def test_votes_reject_bad_input(five_classes):
    X, y, X_val, _ = five_classes
    forest = RandomForestClassifier(2, max_depth=2, random_state=0, n_jobs=1).fit(X, y)
    with pytest.raises(ValueError, match="depths"):
        DepthVotes(X_val, [], forest.n_classes_)
    with pytest.raises(ValueError, match="no trees"):
        DepthVotes(X_val, [1], forest.n_classes_).proba()
    with pytest.raises(ValueError, match="3 classes"):
        DepthVotes(X_val, [1], 3).add(forest.estimators_)


# ---- by hand -------------------------------------------------------------------------------


def hand_built_tree() -> DecisionTreeClassifier:
    """A two-class tree whose nodes are written here:

        node 0 (depth 0): x0 <= 0.5, distribution (0.5, 0.5)
          node 1 (depth 1): x1 <= 0.5, distribution (0.8, 0.2)
            node 2 (depth 2): leaf (1.0, 0.0)
            node 3 (depth 2): leaf (0.25, 0.75)
          node 4 (depth 1): leaf (0.1, 0.9)
    """
    from sklearn.tree._tree import Tree

    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit([[0.0, 0.0], [1.0, 1.0]], [0, 1])
    state = tree.tree_.__getstate__()
    nodes = np.zeros(5, dtype=state["nodes"].dtype)
    for node, (left, right, feature, threshold) in enumerate(
        [(1, 4, 0, 0.5), (2, 3, 1, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)]
    ):
        nodes[node]["left_child"], nodes[node]["right_child"] = left, right
        nodes[node]["feature"], nodes[node]["threshold"] = feature, threshold
        nodes[node]["n_node_samples"] = nodes[node]["weighted_n_node_samples"] = 10
    values = np.array([[0.5, 0.5], [0.8, 0.2], [1.0, 0.0], [0.25, 0.75], [0.1, 0.9]])[:, None, :]
    # A fresh Tree, as unpickling makes one (setting the state of a fitted one would write past
    # its smaller buffers).
    tree.tree_ = Tree(2, np.array([2], dtype=np.intp), 1)
    tree.tree_.__setstate__({**state, "max_depth": 2, "node_count": 5, "nodes": nodes, "values": values})
    return tree


def test_truncation_at_depth_d_uses_the_node_value_at_depth_d():
    tree = hand_built_tree()
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(nodes_at_depths(tree, X, [0, 1, 2, 5]),
                                  [[0, 0, 0, 0], [1, 1, 4, 4], [2, 3, 4, 4], [2, 3, 4, 4]])
    votes = DepthVotes(X, [0, 1, 2], 2, n_jobs=1).add([tree]).proba()
    np.testing.assert_allclose(votes[0], [[0.5, 0.5]] * 4, **TOLERANCE)
    np.testing.assert_allclose(votes[1], [[0.8, 0.2], [0.8, 0.2], [0.1, 0.9], [0.1, 0.9]], **TOLERANCE)
    np.testing.assert_allclose(votes[2], [[1.0, 0.0], [0.25, 0.75], [0.1, 0.9], [0.1, 0.9]], **TOLERANCE)
    np.testing.assert_allclose(votes[2], tree.predict_proba(X), **TOLERANCE)


def test_node_value_is_the_bootstrap_weighted_class_fraction_of_the_rows_reaching_it(five_classes):
    """What scikit-learn stores at an internal node is what a leaf there would predict: the class
    fractions of the in-bag rows reaching it, each row counted as often as the bootstrap drew it."""
    X, y, X_val, _ = five_classes
    forest = RandomForestClassifier(3, random_state=2, n_jobs=1).fit(X, y)
    depths = [1, 3, 6]
    proba = truncated_proba(forest, X_val[:40], depths)
    expected = np.zeros_like(proba)
    for tree, in_bag in zip(forest.estimators_, forest.estimators_samples_):
        counts = np.bincount(in_bag, minlength=len(X)).astype(float)  # how often the bootstrap drew each row
        t = tree.tree_
        for row, x in enumerate(X_val[:40]):
            for position, depth in enumerate(depths):
                reaching, node = np.ones(len(X), dtype=bool), 0  # the training rows on the row's path
                for _ in range(depth):
                    if t.children_left[node] == -1:  # a leaf above depth d: the cut keeps it
                        break
                    feature, threshold = t.feature[node], t.threshold[node]
                    go_left = x[feature] <= threshold
                    reaching &= (X[:, feature] <= threshold) == go_left
                    node = t.children_left[node] if go_left else t.children_right[node]
                weights = np.bincount(y[reaching], weights=counts[reaching], minlength=forest.n_classes_)
                expected[position, row] += weights / weights.sum()
    np.testing.assert_allclose(proba, expected / len(forest.estimators_), rtol=1e-9, atol=1e-12)
    # ... and the cut does matter: depth 1 is not the leaves' answer.
    assert np.abs(proba[0] - forest.predict_proba(X_val[:40])).max() > 0.1


# ---- warm start ----------------------------------------------------------------------------


def test_a_forest_grown_in_batches_is_the_forest_grown_at_once(five_classes):
    X, y, X_val, _ = five_classes
    once = RandomForestClassifier(10, max_depth=8, random_state=6, n_jobs=1).fit(X, y)
    batched = RandomForestClassifier(3, max_depth=8, random_state=6, n_jobs=2, warm_start=True).fit(X, y)
    for n in (4, 10):
        batched.set_params(n_estimators=n).fit(X, y)
    assert len(batched.estimators_) == 10
    for a, b in zip(once.estimators_, batched.estimators_):
        assert a.random_state == b.random_state
        np.testing.assert_array_equal(a.tree_.children_left, b.tree_.children_left)
        np.testing.assert_array_equal(a.tree_.feature, b.tree_.feature)
        np.testing.assert_allclose(a.tree_.threshold, b.tree_.threshold, **TOLERANCE)
    np.testing.assert_allclose(once.predict_proba(X_val), batched.predict_proba(X_val), **TOLERANCE)


# ---- in distribution, over seeds -----------------------------------------------------------

SEEDS = range(10)
N_AXIS = (5, 25)
DEPTHS = (1, 2, 3, 4, 6, 8, 12)
# A cell passes when |mean over seeds of (truncated - real)| <= K standard errors of that mean
# difference + SLACK. The grids of one seed share their bootstrap samples and their root split
# (the same per-tree seeds), so the difference is paired by seed, which narrows it. K = 4: for
# 10 seeds (t, 9 degrees of freedom) a true agreement exceeds it with probability about 0.3%
# per cell. SLACK (4 of the 2,000 validation rows) covers cells whose difference is nearly
# constant across seeds.
K, SLACK = 4.0, 0.002


def _val_accuracies(method, data):
    X, y, X_val, y_val = data
    table = []
    for seed in SEEDS:
        search = ForestGridSearch(N_AXIS, DEPTHS, backend="sklearn", random_state=seed, n_jobs=1, progress=False,
                                  method=method).fit(X, y, X_val, y_val)
        assert [(c["n_estimators"], c["max_depth"]) for c in search.cells_] == [(n, d) for d in DEPTHS for n in N_AXIS]
        table.append([[c["val_accuracy"] for c in search.cells_ if c["max_depth"] == d] for d in DEPTHS])
    return np.array(table)  # [seed, depth, n_estimators]


def _disagreement(truncated, real):
    """(|mean difference|, its bound K * SE + SLACK) per cell."""
    difference = truncated - real
    standard_error = difference.std(axis=0, ddof=1) / np.sqrt(len(difference))
    return np.abs(difference.mean(axis=0)), K * standard_error + SLACK


@pytest.fixture(scope="module")
def accuracies(five_classes):
    """Validation accuracy per seed and cell: cut from one forest, and of real forests (the
    per-depth way, whose cells are exactly ordinary forests with their settings)."""
    return _val_accuracies("truncate", five_classes), _val_accuracies("per_depth", five_classes)


def test_truncated_cells_agree_with_real_forests_over_seeds(accuracies):
    truncated, real = accuracies
    gap, bound = _disagreement(truncated, real)
    for (d, n), value in np.ndenumerate(gap):
        cell = f"n_estimators={N_AXIS[n]}, max_depth={DEPTHS[d]}"
        assert value <= bound[d, n], f"{cell}: mean difference {value:.4f} > {bound[d, n]:.4f}"
        # and the mean truncated accuracy lies within the real forests' range over the seeds
        assert real[:, d, n].min() - 1e-12 <= truncated[:, d, n].mean() <= real[:, d, n].max() + 1e-12, cell
    # The top depth is where the forest was grown to: those cells are the real forests.
    np.testing.assert_allclose(truncated[:, -1], real[:, -1], atol=1.01 / 2000)
    # Depth keeps mattering on these data, so a wrong depth would show.
    assert real[:, -1].mean() - real[:, 0].mean() > 0.15


def test_the_same_test_rejects_a_cut_one_level_too_shallow(accuracies):
    """The power check: compare the cut at the previous depth of the grid with real forests at
    the next one (an off-by-one in the depth); the test above must fail on several cells."""
    truncated, real = accuracies
    consecutive = [i for i in range(1, len(DEPTHS)) if DEPTHS[i] - DEPTHS[i - 1] == 1]  # depths 2, 3, 4
    gap, bound = _disagreement(truncated[:, [i - 1 for i in consecutive]], real[:, consecutive])
    assert int((gap > bound).sum()) >= 3, (gap, bound)
