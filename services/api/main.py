"""The relaytune control plane: HTTP in, orchestrator calls out."""

from __future__ import annotations

from fastapi import FastAPI

from services.api.body_guard import BodyGuard
from services.api.errors import install_error_handlers
from services.api.lifespan import lifespan
from services.api.routes import api_keys, datasets, estimates, jobs, metrics, pools, system, tenants


def create_app() -> FastAPI:
    app = FastAPI(
        title="relaytune",
        version="0.1.0",
        lifespan=lifespan,
        description="Few-shot LoRA fine-tuning of Qwen3-VL as a relay of GPU pools.",
    )
    install_error_handlers(app)
    app.add_middleware(BodyGuard)
    app.include_router(system.router)
    app.include_router(pools.router)
    app.include_router(tenants.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(estimates.router)
    app.include_router(metrics.router)
    app.include_router(api_keys.router)
    return app


app = create_app()
