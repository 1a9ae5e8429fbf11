"""The no-op stack: uvicorn (uvloop, httptools) + Starlette reading the body and answering a
constant. What any Python server on this stack costs before it does anything.

Run: uvicorn noop_server:app --workers 2 --loop uvloop --http httptools
"""

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"predictions": [0]}'


async def invocations(request):
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def ping(request):
    return Response(b"ok")


app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])
