"""KServe 0.21: a ``kserve.Model`` around the scikit-learn model, served by ``ModelServer`` (v1
protocol: ``POST /v1/models/model:predict`` with ``{"instances": rows}``).

Run: MODEL_PICKLE=path python kserve_server.py --http_port P --workers 2
"""

import os
import pickle

import kserve
import numpy as np
import pandas as pd
from kserve import model_server


class SKLearn(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        with open(os.environ["MODEL_PICKLE"], "rb") as f:
            self.model, self.columns = pickle.load(f)
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        rows = payload["instances"]
        x = pd.DataFrame(rows, columns=self.columns) if self.columns else np.asarray(rows, dtype=np.float64)
        return {"predictions": self.model.predict(x).tolist()}


if __name__ == "__main__":
    args, _ = model_server.parser.parse_known_args()
    kserve.ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=False).start([SKLearn("model")])
