"""Azure ML's scoring contract: ``POST /score`` with ``{"data": [[...], ...]}`` or
``{"data": [{...}, ...]}``, answered with a JSON list; an entry script's ``run()`` gets the raw
body."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route as StarletteRoute

from ...errors import InvalidRequest
from ...registry.inputs import Chunk
from ..dataplane import Protocol
from ..runtime import ServedModel


class Score(Protocol):
    name = "score"

    def parse(self, model: ServedModel, body: bytes, request: Request) -> tuple[Chunk, Any]:
        chunk = model.spec.from_json(body, ("data",), ("data",))
        if chunk is not None:
            return chunk, None
        doc = self.plane.json(body)
        if not isinstance(doc, dict):
            raise InvalidRequest("the body must be a JSON object with 'data'", field="body")
        if "data" not in doc:
            raise InvalidRequest("the body has no 'data' key: send {\"data\": [[...], ...]}", field="data")
        return model.spec.from_rows(doc["data"], "data"), None

    def routes(self) -> list[StarletteRoute]:
        return self.scoring_routes("score")
