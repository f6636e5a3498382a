"""The floor of bench_serve.py: an empty Ray Serve app, one deployment with a FastAPI ingress that
answers POST /v1/recommend with a constant body the size of a real answer (10 items). What Serve
itself costs per request on this machine: the endpoint cannot do better than this."""

# No `from __future__ import annotations`: FastAPI must see the Request type itself (as a string
# it takes `request` for a query parameter and answers 422).
from fastapi import FastAPI, Request
from ray import serve

ANSWER = {"items": [{"item_id": f"some movie title ({1990 + i})", "title": f"Some Movie Title {i}",
                     "score": 12.5 - i, "categories": ["Drama", "Comedy"]} for i in range(10)],
          "fallback": None, "model": "floor:1", "request_id": ""}

api = FastAPI(title="Serve floor")


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Floor:
    @api.post("/v1/recommend")
    async def recommend(self, request: Request) -> dict:
        await request.body()  # read the body, as the endpoint does
        return ANSWER


app = Floor.bind()
