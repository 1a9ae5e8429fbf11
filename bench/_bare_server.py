"""The bare ceiling for bench/serving.py: uvicorn + Starlette + orjson, the model called on a NumPy
array, no auth, no validation, no collection. Physical reference only, not a product. The model
is called as mlops_lab's server calls it (a forest tree by tree: mlops_lab.serving.accel), so
that the ceiling measures the server around the model, not two ways of calling it. A model that
needs a DataFrame (a ColumnTransformer picking columns by name: ``BARE_FRAME=1``) gets one.

Run: MODEL_PICKLE=path uvicorn bench._bare_server:app --workers 2 --loop uvloop --http httptools
"""

import os
import pickle
import warnings

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from mlops_lab.serving.accel import faster_call

with open(os.environ["MODEL_PICKLE"], "rb") as f:
    MODEL, COLUMNS = pickle.load(f)
PREDICT = faster_call(MODEL, "predict") or MODEL.predict
if os.environ.get("BARE_FRAME"):
    import pandas as pd

    def convert(rows):
        return pd.DataFrame(rows, columns=COLUMNS)
else:
    warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def convert(rows):
        return np.asarray(rows, dtype=np.float64)


async def invocations(request):
    doc = orjson.loads(await request.body())
    out = PREDICT(convert(doc["inputs"]))
    return Response(orjson.dumps({"predictions": out}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def ping(request):
    return Response(b"ok")


app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
