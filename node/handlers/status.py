"""Handlers for ``node.status`` and ``keys.list``: who this node is and the public
metadata of the keys it holds (never a share; see ``protocol.node_api``)."""

from __future__ import annotations

from typing import Any

from node.handlers import HandlerRegistry, NodeContext
from node.store import KeyMetadata
from protocol import node_api
from protocol.rpc import PROTOCOL_VERSION


def public_metadata(meta: KeyMetadata) -> node_api.PublicKeyMetadata:
    """The wire form of the store's metadata (indices, bytes; no secret in it)."""
    return node_api.PublicKeyMetadata(
        key_id=meta.key_id,
        epoch=meta.epoch,
        t=meta.t,
        n=meta.n,
        holders=tuple(meta.holders),
        status=meta.status.value,
        pk_g1=meta.pk_g1,
        pk_g2=meta.pk_g2,
        public_shares=tuple(sorted(meta.public_shares.items())),
        transcript_hash=meta.transcript_hash,
    )


def register(registry: HandlerRegistry, ctx: NodeContext) -> None:
    public = ctx.identity.public

    @registry.handles(node_api.NODE_STATUS)
    async def node_status(params: dict[str, Any]) -> dict[str, Any]:
        keys = await ctx.store.list_keys()
        return node_api.NodeStatus(
            name=ctx.entry.name,
            index=ctx.entry.index,
            protocol_version=PROTOCOL_VERSION,
            cluster_id=ctx.cluster_id,
            noise_public_key=public.noise_public_key,
            ed25519_public_key=public.ed25519_public_key,
            keys=tuple(node_api.KeySummary(k.key_id, k.epoch, k.status.value) for k in keys),
        ).to_wire()

    @registry.handles(node_api.KEYS_LIST)
    async def keys_list(params: dict[str, Any]) -> dict[str, Any]:
        after: str | None = params.get("after")
        limit: int = params.get("limit", node_api.KEYS_PAGE)
        keys = sorted(await ctx.store.list_keys(), key=lambda k: k.key_id)
        if after is not None:
            keys = [k for k in keys if k.key_id > after]
        page = keys[:limit]
        return {
            "keys": [public_metadata(k).to_wire() for k in page],
            "more": len(keys) > limit,
        }
