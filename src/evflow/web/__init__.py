"""evflow on the web: ``lifespan`` for Starlette/FastAPI apps and ``app``, the JSON API,
live event stream and dashboard to mount (docs/web.md). Needs the ``evflow[web]`` extra."""

from ._app import app as app
from ._lifespan import lifespan as lifespan

__all__ = ["app", "lifespan"]
