"""Fitted scikit-learn models of many kinds: what the pickle allowlist must accept.

Shared by the runtime's tests and the collection's unit tests (runtime/tests on sys.path).
Small data (iris and a few synthetic columns) so that the whole zoo fits in a few seconds.
"""
import warnings

import numpy as np


def zoo() -> dict:
    """name -> fitted model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _fit()


def _fit() -> dict:
    import scipy.sparse
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import (AdaBoostClassifier, BaggingClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                                  HistGradientBoostingClassifier, HistGradientBoostingRegressor, IsolationForest,
                                  RandomForestClassifier, StackingClassifier, VotingClassifier)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.feature_selection import SelectKBest, f_classif, mutual_info_classif
    from sklearn.frozen import FrozenEstimator
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KernelDensity, KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import (FunctionTransformer, KBinsDiscretizer, OneHotEncoder, PolynomialFeatures,
                                       QuantileTransformer, SplineTransformer, StandardScaler)
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    out = {}
    out["lr"] = LogisticRegression(max_iter=500).fit(X, y)
    out["pipe"] = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    out["rf"] = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    out["gb"] = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    out["hgb"] = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
    Xc = np.c_[np.round(X[:, :1]), X[:, 1:]]
    out["hgbr_cat"] = HistGradientBoostingRegressor(max_iter=5, categorical_features=[0], random_state=0).fit(Xc, y)
    out["cal"] = CalibratedClassifierCV(SVC(), cv=3).fit(X, y)
    out["cal_iso"] = CalibratedClassifierCV(GaussianNB(), method="isotonic", cv=3).fit(X, y)
    out["svc"] = SVC(probability=True, random_state=0).fit(X, y)
    out["knn_kd"] = KNeighborsClassifier(algorithm="kd_tree").fit(X, y)
    out["knn_ball"] = KNeighborsClassifier(algorithm="ball_tree").fit(X, y)
    out["kde"] = KernelDensity().fit(X)
    out["mlp"] = MLPClassifier(hidden_layer_sizes=(5,), max_iter=50, random_state=0).fit(X, y)
    out["vote"] = VotingClassifier([("a", LogisticRegression(max_iter=500)), ("b", DecisionTreeClassifier())],
                                   voting="soft").fit(X, y)
    out["stack"] = StackingClassifier([("a", GaussianNB()), ("b", DecisionTreeClassifier())],
                                      final_estimator=LogisticRegression(max_iter=500)).fit(X, y)
    out["bag_rs"] = BaggingClassifier(n_estimators=3, random_state=np.random.RandomState(0)).fit(X, y)
    out["ada"] = AdaBoostClassifier(n_estimators=3).fit(X, y)
    out["iso_forest"] = IsolationForest(n_estimators=3, random_state=0).fit(X)
    out["etr"] = ExtraTreesRegressor(n_estimators=3).fit(X, y)
    out["kbest"] = make_pipeline(SelectKBest(f_classif, k=2), GaussianNB()).fit(X, y)
    out["kbest_mi"] = make_pipeline(SelectKBest(mutual_info_classif, k=2), GaussianNB()).fit(X, y)
    out["spline"] = make_pipeline(SplineTransformer(), Ridge()).fit(X, y)
    out["quantile"] = make_pipeline(QuantileTransformer(n_quantiles=20), PCA(2), KMeans(3, n_init=1, random_state=0)).fit(X)
    out["kbins"] = make_pipeline(KBinsDiscretizer(n_bins=3), PolynomialFeatures(2), SGDClassifier(random_state=0)).fit(X, y)
    out["ttr"] = TransformedTargetRegressor(Ridge(), func=np.log1p, inverse_func=np.expm1).fit(X, y)
    out["ftrans"] = make_pipeline(FunctionTransformer(np.log1p), LinearDiscriminantAnalysis()).fit(X, y)
    out["grid"] = GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=3, scoring="f1_macro").fit(X, y)
    out["gpc"] = GaussianProcessClassifier(random_state=0).fit(X[:60], y[:60])
    out["isotonic"] = IsotonicRegression().fit(X[:, 0], y)
    cats = np.array([["a", "x"], ["b", "y"], ["a", "y"], ["c", "x"]] * 10, dtype=object)
    out["ohe_obj"] = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(cats, [0, 1, 0, 1] * 10)
    mixed = np.c_[X[:40], cats]
    out["coltrans"] = make_pipeline(ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), [0, 1, 2, 3]),
                                                       ("cat", OneHotEncoder(sparse_output=True), [4, 5])]),
                                    DecisionTreeClassifier(random_state=0)).fit(mixed, y[:40])
    docs = ["the cat sat", "the dog ran", "a cat ran", "dogs and cats"] * 5
    out["tfidf"] = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, [0, 1, 0, 1] * 5)
    out["knn_sparse"] = KNeighborsClassifier(algorithm="brute").fit(scipy.sparse.csr_matrix(X), y)
    out["frozen_cal"] = CalibratedClassifierCV(FrozenEstimator(out["lr"])).fit(X, y)
    return out
