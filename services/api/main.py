"""The relaytune control plane: HTTP in, orchestrator calls out."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from services.api.body_guard import BodyGuard
from services.api.deps import refuse_nul
from services.api.error_schemas import API_ERRORS, OPERATOR_ERRORS, PROBE_ERRORS
from services.api.errors import install_error_handlers
from services.api.lifespan import lifespan
from services.api.routes import (
    api_keys,
    dashboard,
    datasets,
    estimates,
    jobs,
    metrics,
    models,
    openai_files,
    openai_fine_tuning,
    pools,
    system,
    tenants,
    webhooks,
)


def create_app() -> FastAPI:
    # /docs and /redoc load Swagger UI and ReDoc from assets packaged with the app, not from a
    # CDN, so they work on a machine without internet.
    app = FastAPIOffline(
        title="relaytune",
        version="0.1.0",
        lifespan=lifespan,
        description="Few-shot LoRA fine-tuning of Qwen3-VL as a relay of GPU pools.",
    )
    install_error_handlers(app)
    app.add_middleware(BodyGuard)
    # The error responses are declared per router, so the schema shows every route's envelope.
    app.include_router(system.router, responses=PROBE_ERRORS)
    for api_router in (
        pools.router,
        tenants.router,
        datasets.router,
        jobs.router,
        estimates.router,
        api_keys.router,
        models.router,
        webhooks.router,
        openai_files.router,
        openai_fine_tuning.router,
    ):
        app.include_router(api_router, responses=API_ERRORS, dependencies=[Depends(refuse_nul)])
    app.include_router(metrics.router, responses=OPERATOR_ERRORS)
    app.include_router(dashboard.router)
    return app


app = create_app()
