"""HTTP routes of the write keys kept in the database (admin token).

``POST /v1/write-keys`` ``{"name": "pos-store-12"}`` creates one and answers it, with the
key itself, once (201); ``GET /v1/write-keys`` lists them without secrets;
``DELETE /v1/write-keys/{id}`` revokes one (this process refuses it at once, the others
within ``ECRM_KEY_REFRESH_SECONDS``). See :mod:`pipeline.write_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from pipeline import ValidationError, utcnow
from pipeline.write_keys import ManagedKeys, create_key, list_keys, revoke_key
from workers.auth import admin_workspace
from workers.params import RowId
from workers.problems import Problem, json_object
from workers.runtime import Runtime

PATH = "/v1/write-keys"


def keys_router(runtime: Runtime, admin_tokens: Mapping[str, str], keys: ManagedKeys) -> APIRouter:
    """``/v1/write-keys`` routes; ``keys`` is the process's copy, reloaded on each change."""
    router = APIRouter()
    db = runtime.db

    @router.post(PATH, status_code=201)
    async def post_key(request: Request) -> JSONResponse:
        workspace = admin_workspace(request, admin_tokens)
        body = await json_object(request)
        unknown = sorted(set(body) - {"name"})
        if unknown:
            raise Problem(400, "Invalid write key", "unknown field; use ['name']", unknown[0])
        name = body.get("name")
        if not isinstance(name, str):
            raise Problem(400, "Invalid write key", "name is required (text)", "name")

        def write() -> dict[str, Any]:
            try:
                with db.write() as session:
                    created = create_key(session, workspace, name, utcnow())
            except ValidationError as exc:
                raise Problem(400, "Invalid write key", exc.message, exc.field) from None
            keys.reload()
            return {**created.view, "key": created.key}

        return JSONResponse(jsonable_encoder(await run_in_threadpool(write)), status_code=201)

    @router.get(PATH)
    def get_keys(request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        with db.read() as session:
            return {"write_keys": list_keys(session, workspace)}

    @router.delete(PATH + "/{key_id}")
    def delete_key(key_id: RowId, request: Request) -> dict[str, Any]:
        workspace = admin_workspace(request, admin_tokens)
        try:
            with db.write() as session:
                view = revoke_key(session, workspace, key_id, utcnow())
        except KeyError:
            raise Problem(404, "Not Found", f"no write key {key_id}", "key_id") from None
        keys.reload()
        return view

    return router


__all__ = ["PATH", "keys_router"]
