"""BentoML 1.4: a service with one API taking rows, as its scikit-learn example does.

Run: MODEL_PICKLE=path WORKERS=2 bentoml serve bentoml_service:Model --host 127.0.0.1 --port P
"""

import os
import pickle

import bentoml
import numpy as np
import pandas as pd

with open(os.environ["MODEL_PICKLE"], "rb") as f:
    MODEL, COLUMNS = pickle.load(f)


@bentoml.service(workers=int(os.environ.get("WORKERS", "2")), logging={"access": {"enabled": False}})
class Model:
    @bentoml.api
    def predict(self, inputs: list) -> list:
        x = pd.DataFrame(inputs, columns=COLUMNS) if COLUMNS else np.asarray(inputs, dtype=np.float64)
        return MODEL.predict(x).tolist()
