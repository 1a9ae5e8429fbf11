"""The main job, end to end on the embedded defaults (a SQLite registry in the home folder, a
local deployment on loopback).

Train a scikit-learn model, register it (signature, baseline, tags), load it back, deploy it
as a web service, score over HTTP, update it to a second version with no downtime and roll
back, read the collected data and metrics, check drift, save the monitoring chart, and delete
the deployment. Run with ``make demo``.
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


def main() -> None:
    t0 = time.perf_counter()
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)

    # 1. Register
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
    print(f"registry : {ml.Settings.load().db}")
    print(f"registered {mv.ref}  ({mv.flavor}, {mv.size} bytes, accuracy {accuracy:.3f})")
    print(f"  signature    : {len(mv.signature['columns'])} columns, e.g. {mv.signature['columns'][0]}")
    print(f"  requirements : {', '.join(mv.requirements)}")
    ml.set_alias("breast-cancer", "candidate", mv.version)
    print("models in the registry:")
    for m in ml.list_models():
        print(f"  {m.name:<24} versions={m.versions:<3} latest={m.latest_version} aliases={m.aliases}")
    loaded = ml.load_model("breast-cancer@candidate")
    if not np.array_equal(loaded.predict(X_test), clf.predict(X_test)):
        raise SystemExit("the loaded model does not answer as the original")
    print(f"loaded {loaded.ref} back: predictions identical to the original")

    # 2. Use: deploy and score over HTTP
    name = f"quickstart-{int(time.time())}"
    d = ml.deploy(mv.ref, name=name)
    try:
        answers = d.predict(X_test.head(20))
        if answers != clf.predict(X_test.head(20)).tolist():
            raise SystemExit("the deployment does not answer as the model")
        print(f"deployed at {d.url}: 20 rows scored over HTTP, same answers")
        for i in range(0, len(X_test), 10):
            d.predict(X_test.iloc[i : i + 10])

        # 4. Update to a second version with no downtime, then roll back
        clf2 = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(X_train, y_train)
        mv2 = ml.register_model(clf2, "breast-cancer", sample_input=X_train, baseline=X_train)
        d.update(mv2.ref)
        d.predict(X_test.head(5))
        d.rollback()
        print(f"updated to {mv2.ref} and rolled back: revision {d.revision} serves {d.models[0]['name']}:{d.models[0]['version']}")

        # 3. Monitor (each update and rollback stopped servers gracefully: their data is on disk)
        data = ml.collected_data(name)
        print(f"collected {len(data)} rows from {data.request_id.nunique()} requests, "
              f"columns: {', '.join(data.columns[:7])}, ...")
        print(ml.metrics(name, every="1h").to_string(index=False))
        drifted = ml.drift(name, window="1h")
        print(f"drift against {drifted.attrs['reference']}: "
              f"{int(drifted.drifted.sum())} of {len(drifted)} columns flagged")
        chart = ml.monitor(name, since="1h")
        chart.save("monitor.html")
        print("monitoring chart saved to monitor.html")
    finally:
        d.delete()
    print(f"deployment deleted; done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
