"""Langfuse's models API: GET/POST /api/public/models, GET/PUT/DELETE /api/public/models/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Path

from tracehouse.api_common import BadParameter, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.pricing.models import CreateModelRequest, DeleteModelResponse, Model, PaginatedModels
from tracehouse.pricing.service import PricingService, pricing_service
from tracehouse.runtime import Services

router = APIRouter(tags=["models"])

MAX_PAGE = 2**31 - 1  # Langfuse's page is a 32-bit integer
ModelId = Path(min_length=1, max_length=255, description="The model's id")


def _pricing(services: Services = Depends(get_services)) -> PricingService:
    return pricing_service(services.metadata)


@router.get("/api/public/models", response_model=PaginatedModels, responses=error_responses(400, 401))
async def list_models(
    page: int = 1,
    limit: int = 50,
    auth: ProjectAuth = Depends(require_project),
    pricing: PricingService = Depends(_pricing),
) -> PaginatedModels:
    """The project's own models and the default ones, by modelName, unit and newest startDate."""
    if not 1 <= page <= MAX_PAGE:
        raise BadParameter("page", f"must be between 1 and {MAX_PAGE}")
    if not 1 <= limit <= 100:
        raise BadParameter("limit", "must be between 1 and 100")
    return await pricing.list_models(auth.project_id, page, limit)


@router.post("/api/public/models", response_model=Model, responses=error_responses(400, 401))
async def create_model(
    body: CreateModelRequest = Body(...),
    auth: ProjectAuth = Depends(require_project),
    pricing: PricingService = Depends(_pricing),
) -> Model:
    """A project model; it is chosen before any default model whose pattern also matches."""
    return await pricing.create_model(auth.project_id, body)


@router.get("/api/public/models/{model_id}", response_model=Model, responses=error_responses(400, 401, 404))
async def get_model(
    model_id: str = ModelId,
    auth: ProjectAuth = Depends(require_project),
    pricing: PricingService = Depends(_pricing),
) -> Model:
    return await pricing.get_model(auth.project_id, model_id)


@router.put("/api/public/models/{model_id}", response_model=Model, responses=error_responses(400, 401, 404))
async def upsert_model(
    model_id: str = ModelId,
    body: CreateModelRequest = Body(...),
    auth: ProjectAuth = Depends(require_project),
    pricing: PricingService = Depends(_pricing),
) -> Model:
    """Create or replace a project model by id; default models and other projects' ids answer 404."""
    return await pricing.upsert_model(auth.project_id, model_id, body)


@router.delete(
    "/api/public/models/{model_id}", response_model=DeleteModelResponse, responses=error_responses(400, 401, 404)
)
async def delete_model(
    model_id: str = ModelId,
    auth: ProjectAuth = Depends(require_project),
    pricing: PricingService = Depends(_pricing),
) -> DeleteModelResponse:
    """Only a project's own models; a default model answers 404 (override it instead)."""
    await pricing.delete_model(auth.project_id, model_id)
    return DeleteModelResponse()
