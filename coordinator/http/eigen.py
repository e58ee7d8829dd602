"""HTTP routes of the EigenLayer operator integration (docs/api.md):

* ``POST /v1/keys/import/open`` (operator): ``{"keyId", "minHolders"?}`` -> the nodes'
  signed per-import encryption keys (``protocol.import_json.opening_to_json``).
* ``POST /v1/keys/import`` (operator): the bundle the operator's CLI built (public
  data and per-node ciphertexts; ``protocol.import_json``) -> 201 with the key and its
  import transcript. No keystore, password or key ever reaches the coordinator.
* ``POST /v1/keys/{key_id}/registration`` (signer of that key): ``{"operator",
  "registryCoordinator", "chainId"}`` -> ``PubkeyRegistrationParams`` (JSON and ABI)
  and the EIP-712 digest. The coordinator computes the message point itself, so this
  route signs registration points only (unlike cerberus' SignG1); the signature comes
  from the threshold path (``Backend.sign_point``) and is checked with the
  ``BLSApkRegistry`` equation before it is answered.
"""

from __future__ import annotations

import logging

from coordinator.backend import Backend, Client, KeyNotActive
from coordinator.http import validation as v
from coordinator.http.core import ApiError, Context, Request, Response, Route, json_response
from coordinator.http.views import key_view
from protocol.eigenlayer import (
    RegistrationParams,
    registration_digest,
    registration_message_point,
)
from protocol.errors import DecodeError
from protocol.import_json import BUNDLE_FIELDS, bundle_from_json, opening_to_json
from protocol.key_import import ImportTranscript
from protocol.registration import REQUEST_FIELDS, parse_registration_request, registration_json

log = logging.getLogger("tkms.coordinator.http")


def _invalid(exc: DecodeError) -> ApiError:
    return v.invalid(exc.field, exc.reason)


def _min_holders(value: object, lo: int) -> int | None:
    return None if value is None else v.integer(value, "minHolders", lo, v.MAX_THRESHOLD)


class EigenRoutes:
    """The handlers; ``routes()`` is spliced into ``HttpApp.routes()``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/keys/import/open", self.open_import, "operator", True, "ceremony"),
            Route("POST", "/v1/keys/import", self.import_key, "operator", True, "ceremony"),
            Route(
                "POST", "/v1/keys/{key_id}/registration", self.registration, "signer", True, "sign"
            ),
        ]

    async def open_import(self, req: Request, ctx: Context) -> Response:
        obj = v.parse_json_object(req.body)
        v.check_fields(obj, frozenset({"keyId"}), frozenset({"minHolders"}))
        kid = v.key_id(obj["keyId"], new=True)
        min_holders = _min_holders(obj.get("minHolders"), 2)
        opening = await self.backend.open_import(kid, min_holders=min_holders, client=_client(ctx))
        body = opening_to_json(opening.key_id, opening.epoch, opening.opens, opening.missing)
        return json_response(200, body)

    async def import_key(self, req: Request, ctx: Context) -> Response:
        obj = v.parse_json_object(req.body)
        v.check_fields(obj, BUNDLE_FIELDS, frozenset({"minHolders"}))
        kid = v.key_id(obj["keyId"], new=True)
        threshold = v.integer(obj["threshold"], "threshold", 2, v.MAX_THRESHOLD)
        min_holders = _min_holders(obj.get("minHolders"), threshold)
        try:
            bundle = bundle_from_json(obj)
        except DecodeError as exc:
            raise _invalid(exc) from None
        result = await self.backend.import_key(
            kid, bundle, min_holders=min_holders, client=_client(ctx)
        )
        transcript = ImportTranscript.decode(result.transcript).to_json()
        body = {**key_view(result.key), "transcript": transcript}
        return json_response(201, body, [("Location", f"/v1/keys/{kid}")])

    async def registration(self, req: Request, ctx: Context) -> Response:
        kid = ctx.params["key_id"]
        obj = v.parse_json_object(req.body)
        v.check_fields(obj, REQUEST_FIELDS)
        try:
            operator, coordinator, chain_id = parse_registration_request(obj)
        except DecodeError as exc:
            raise _invalid(exc) from None
        info = await self.backend.get_key(kid)
        if info.status != "active":
            raise KeyNotActive(kid, info.status)
        point = registration_message_point(operator, coordinator, chain_id)
        sigma = await self.backend.sign_point(kid, point, client=_client(ctx))
        params = RegistrationParams(sigma, info.pk_g1, info.pk_g2)
        if not params.verify(point):
            log.error("registration signature for %s fails the registry check", kid)
            raise ApiError(502, "upstream_error", "the signature fails the registry check")
        digest = registration_digest(operator, coordinator, chain_id)
        return json_response(200, registration_json(params, digest))


def _client(ctx: Context) -> Client:
    if ctx.client is None:  # these routes are never public
        raise ApiError(500, "internal_error", "internal error")
    return ctx.client
