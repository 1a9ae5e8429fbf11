"""Train the model the CI workflow registers: writes model.pkl and a smoke-test payload."""

import json
import pickle
import sys

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

out = sys.argv[1] if len(sys.argv) > 1 else "."
X, y = load_breast_cancer(return_X_y=True)
clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
with open(f"{out}/model.pkl", "wb") as f:
    pickle.dump(clf, f)
with open(f"{out}/smoke.json", "w") as f:
    json.dump({"data": X[:5].tolist(), "expected": clf.predict(X[:5]).tolist()}, f)
print(f"trained: accuracy on training data {clf.score(X, y):.3f}")
