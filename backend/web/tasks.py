"""REST endpoints for tasks: parse, call the task service, return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from backend.tasks import service
from backend.tasks.schemas import TaskCreate, TaskList, TaskRead, TaskStatus, TaskUpdate
from backend.web.apidocs import IDEMPOTENCY_KEY
from backend.web.deps import CurrentUser, SessionDep, SessionsDep, SettingsDep
from backend.web.errors import error_responses
from backend.web.limits import idempotent, limit_reads, limit_writes

router = APIRouter(
    prefix="/api/tasks", tags=["tasks"], responses=error_responses(400, 401, 422, 429, 503)
)


@router.get("", response_model=TaskList, summary="List your tasks")
async def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    request: Request,
    status: TaskStatus = TaskStatus.all,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(ge=0, le=service.MAX_TASK_ID)] = None,
) -> TaskList:
    """Oldest first, one page at a time: pass `next_cursor` back as `after` for the next page."""
    await limit_reads(request, user)
    tasks, next_cursor = await service.page(session, user.id, status, limit=limit, after=after)
    return TaskList(tasks=[TaskRead.model_validate(t) for t in tasks], next_cursor=next_cursor)


@router.post(
    "",
    response_model=TaskRead,
    status_code=201,
    summary="Create a task",
    responses=error_responses(409, 413),
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def create_task(
    body: TaskCreate,
    user: CurrentUser,
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
) -> Any:
    """Send `Idempotency-Key` to make retries safe: a repeat returns the first answer.

    A user holds at most MAX_TASKS_PER_USER tasks: one more answers 409 `task_limit_reached`.
    """
    limit = settings.max_tasks_per_user
    change = service.create(user.id, body.title, body.description, limit)
    await limit_writes(request, user)  # after the checks: an invalid task spends nothing

    async def create() -> TaskRead:
        # Its own transaction, committed before the idempotency record stores the answer.
        async with sessions.begin() as session:
            return TaskRead.model_validate(await service.apply(session, change))

    return await idempotent(request, user, body, create, status_code=201)


@router.get("/{task_id}", response_model=TaskRead, responses=error_responses(404))
async def get_task(
    task_id: int, user: CurrentUser, session: SessionDep, request: Request
) -> TaskRead:
    await limit_reads(request, user)
    return TaskRead.model_validate(await service.get_task(session, user.id, task_id))


@router.patch("/{task_id}", response_model=TaskRead, responses=error_responses(404, 413))
async def update_task(
    task_id: int, body: TaskUpdate, user: CurrentUser, session: SessionDep, request: Request
) -> TaskRead:
    changes = body.model_dump(exclude_unset=True)
    change = service.update(user.id, task_id, **changes) if changes else None
    await limit_writes(request, user)  # after the checks: an invalid change spends nothing
    if change is None:
        return TaskRead.model_validate(await service.get_task(session, user.id, task_id))
    return TaskRead.model_validate(await service.apply(session, change))


@router.delete("/{task_id}", status_code=204, responses=error_responses(404))
async def delete_task(
    task_id: int, user: CurrentUser, session: SessionDep, request: Request
) -> Response:
    await limit_writes(request, user)
    await service.apply(session, service.delete(user.id, task_id))
    return Response(status_code=204)
