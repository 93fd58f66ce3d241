"""pipeline/blend.py: each ensemble method on hand-made arrays with known answers."""

import numpy as np
import pytest

from pipeline import blend, metrics


def test_weighted_mean():
    stack = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert np.allclose(blend.weighted_mean(stack), [[0.5, 0.5]])
    assert np.allclose(blend.weighted_mean(stack, [3, 1]), [[0.75, 0.25]])


def test_a_fitted_blends_oof_rows_take_the_weights_the_other_folds_fitted():
    y = np.array([0, 1] * 10)
    folds = np.repeat([0, 1], 10)
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong = right[:, ::-1]
    a = np.where((folds == 0)[:, None], right, wrong)  # a is right on fold 0 only, b on fold 1 only
    b = np.where((folds == 1)[:, None], right, wrong)
    oofs = np.stack([a, b])
    oof, test, w = blend.combine("fit", oofs, oofs[:, :4], [], y, "accuracy", folds=folds)
    assert np.allclose(oof[folds == 0], b[folds == 0]) and np.allclose(oof[folds == 1], a[folds == 1])
    assert metrics.accuracy(y, oof) == 0.0  # what each fold's rows chose is never scored on them
    assert np.allclose(test, blend.weighted_mean(oofs[:, :4], w))  # the test: the fit on every row
    in_sample, _, _ = blend.combine("fit", oofs, oofs[:, :4], [], y, "accuracy")
    assert np.allclose(in_sample, blend.weighted_mean(oofs, w))


def test_cross_fitting_takes_the_luck_out_of_picking_among_noise_members():
    rng = np.random.default_rng(0)
    y, folds = rng.integers(0, 2, 200), np.arange(200) % 5
    oofs = rng.dirichlet([1, 1], size=(12, 200))  # twelve members that know nothing
    w = blend.fit_weights(oofs, y, "accuracy")
    lucky = metrics.accuracy(y, blend.weighted_mean(oofs, w))
    honest = metrics.accuracy(y, blend.cross_fitted_weights(oofs, y, folds, "accuracy"))
    assert lucky >= max(metrics.accuracy(y, m) for m in oofs) >= 0.55  # in-sample: the luckiest member or better
    assert honest < lucky - 0.03


def test_rank_mean_uses_only_the_order():
    a = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.51, 0.49], [0.50, 0.50], [0.49, 0.51]])  # same order, other calibration
    out = blend.rank_mean(np.stack([a, b]))
    assert np.allclose(out, blend.rank_mean(np.stack([a, a])))
    assert out.argmax(1).tolist() == [0, 0, 1] and np.allclose(out.sum(1), 1)


def test_vote_majority_and_ties_broken_the_same_way_every_time():
    labels = np.array([[0, 1, 2, 0], [0, 1, 1, 1], [2, 0, 2, 2]])  # 3 voters, 4 images
    tie = np.full((4, 3), 1 / 3)
    out = blend.vote(labels, 3, tie)
    assert out.argmax(1).tolist() == [0, 1, 2, 0]  # the last is a three-way tie: lowest index
    assert np.allclose(out.sum(1), 1) and np.allclose(out[0], [2 / 3, 0, 1 / 3], atol=1e-6)
    two = np.array([[0, 1], [1, 0]])  # two voters disagree on both images
    prefer = np.array([[0.4, 0.6], [0.7, 0.3]])
    assert blend.vote(two, 2, prefer).argmax(1).tolist() == [1, 0]  # the tie goes to the likelier class
    for _ in range(3):
        assert blend.vote(two, 2, np.full((2, 2), 0.5)).argmax(1).tolist() == [0, 0]
    strong = np.array([[0.0, 1.0]] * 1)
    assert blend.vote(np.array([[0], [0], [1]]), 2, strong).argmax(1).tolist() == [0]  # never overturns


def test_fitted_weights_are_a_guarded_simplex():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.where(y[:, None] == np.arange(2), 0.8, 0.2)
    noise = rng.dirichlet([1, 1], 200)
    oofs = np.stack([good, noise, 0.5 * good + 0.5 * noise])
    for metric in ("log_loss", "accuracy", "roc_auc"):
        w = blend.fit_weights(oofs, y, metric)
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
        fitted = metrics.score(metric, y, blend.weighted_mean(oofs, w))
        plain = metrics.score(metric, y, blend.weighted_mean(oofs))
        assert not metrics.better(metric, plain, fitted)
        for single in oofs:
            assert not metrics.better(metric, metrics.score(metric, y, single), fitted)
    assert blend.fit_weights(oofs, y, "log_loss")[1] < 0.05  # the noise member is dropped
    assert np.allclose(blend.fit_weights(oofs[:1], y, "accuracy"), [1.0])


def test_vote_and_hierarchical_on_folds():
    # one image; member A's three fold models say 0, 1, 1 (fold mean prefers 0); member B says 0
    a_folds = np.array([[[0.99, 0.01]], [[0.45, 0.55]], [[0.45, 0.55]]])
    b_folds = np.array([[[0.6, 0.4]]] * 3)
    tests = np.stack([a_folds.mean(0), b_folds.mean(0)])
    oofs = np.array([[[0.2, 0.8]], [[0.7, 0.3]]])
    y = np.array([0])
    _, flat, _ = blend.combine("vote", oofs, tests, [a_folds, b_folds], y, "accuracy")
    _, hier, _ = blend.combine("hierarchical", oofs, tests, [a_folds, b_folds], y, "accuracy")
    assert flat.argmax(1).tolist() == [0] and np.allclose(flat, [[4 / 6, 2 / 6]], atol=1e-6)
    assert hier.argmax(1).tolist() == [0] and np.allclose(hier, [[1.0, 0.0]], atol=1e-6)
    oof_h, _, _ = blend.combine("hierarchical", oofs, tests, [a_folds, b_folds], y, "accuracy")
    assert np.allclose(oof_h, blend.vote(oofs.argmax(2), 2, oofs.mean(0)))  # the same rule on OOF


def numbers(seed: int = 0):
    """y and three members' OOF numbers: a good one, a biased one, noise."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 10, 300)
    good, biased, noise = y + rng.normal(0, 1, 300), y + 2 + rng.normal(0, 0.5, 300), rng.uniform(0, 10, 300)
    return y, np.stack([good, biased, noise])[:, :, None]


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_fitted_weights_of_numbers_never_fall_below_the_best_member_on_the_oof(metric):
    y, oofs = numbers()
    w = blend.fit_weights(oofs, y, metric)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0) and w[2] < 0.1  # the noise member is dropped
    fitted = metrics.score(metric, y, blend.weighted_mean(oofs, w))
    for single in [*oofs, blend.weighted_mean(oofs)]:
        assert not metrics.better(metric, metrics.score(metric, y, single), fitted)


def test_median_and_rank_of_numbers():
    y, oofs = numbers()
    tests = oofs[:, :5]
    oof, test, w = blend.combine("median", oofs, tests, [], y, "rmse")
    assert w is None and np.allclose(oof, np.median(oofs, 0)) and np.allclose(test, np.median(tests, 0))
    one = blend.rank_numbers(oofs[:1])  # one member: its own numbers back
    assert np.allclose(one, oofs[0])
    ranked, _, _ = blend.combine("rank", oofs, tests, [], y, "rmse")
    # in the members' mean's units, ordered by the mean rank
    mean = blend.weighted_mean(oofs)
    assert mean.min() <= ranked.min() and ranked.max() <= mean.max()
    mean_rank = np.mean([np.argsort(np.argsort(m[:, 0])) for m in oofs], 0)
    assert (np.diff(ranked[np.argsort(mean_rank, kind="stable"), 0]) >= -1e-12).all()


def test_votes_are_refused_for_a_number():
    assert blend.methods_for("rmse", False, numeric=True) == ("mean", "fit", "rank", "median")
    for method in ("vote", "hierarchical"):
        with pytest.raises(Exception, match=f"ensemble method {method}: a number takes mean, fit, rank, median"):
            blend.allowed_methods(method, "rmse", False, numeric=True)
