"""The main job, end to end on the embedded defaults (a SQLite registry in the home folder).

Train a scikit-learn model, register it with a signature, a baseline and tags, list the
registry, and load the model back to check it answers as the original. Run with ``make demo``.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlops_lab as ml
from mlops_lab.config import db_url, home


def main() -> None:
    t0 = time.perf_counter()
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)

    mv = ml.register_model(
        clf,
        "breast-cancer",
        tags={"stage": "candidate", "algorithm": "logistic-regression"},
        properties={"test_accuracy": round(accuracy, 4)},
        description="Logistic regression on the Wisconsin breast cancer data",
        sample_input=X_train,
        baseline=X_train,
        lineage={"dataset": "sklearn.datasets.load_breast_cancer"},
    )
    print(f"registry : {db_url(home())}")
    print(f"registered {mv.ref}  ({mv.flavor}, {mv.size} bytes, accuracy {accuracy:.3f})")
    print(f"  signature    : {len(mv.signature['columns'])} columns, e.g. {mv.signature['columns'][0]}")
    print(f"  requirements : {', '.join(mv.requirements)}")

    ml.set_alias("breast-cancer", "candidate", mv.version)

    print("models in the registry:")
    for m in ml.list_models():
        print(f"  {m.name:<24} versions={m.versions:<3} latest={m.latest_version} aliases={m.aliases}")

    loaded = ml.load_model("breast-cancer@candidate")
    same = np.array_equal(loaded.predict(X_test), clf.predict(X_test))
    print(f"loaded {loaded.ref} back: predictions identical to the original: {same}")
    if not same:
        raise SystemExit("the loaded model does not answer as the original")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
