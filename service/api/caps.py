"""/v1/limits: the caps this deployment holds requests to (the schema shows the defaults)."""
from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import SettingsDep
from service.api.errors import error_responses
from service.specs import LimitsPublic

router = APIRouter(prefix="/v1/limits", tags=["limits"], responses=error_responses(401))


@router.get("", response_model=LimitsPublic)
def get_limits(settings: SettingsDep) -> LimitsPublic:
    return LimitsPublic.model_validate(settings.model_dump(include=set(LimitsPublic.model_fields)))
