"""The pipelined RESP client (mockgen/resp.py) against a real redis-server: replies that arrive in many
pieces, many steps in flight on one connection, every kind of reply, and the packed command prefix."""

from __future__ import annotations

import asyncio
import os

import pytest
from redis import exceptions as rx

from mockgen.resp import RespClient

from .redis_server import RedisServer, fresh_prefix, redis_server

pytestmark = pytest.mark.usefixtures(redis_server.__name__)

ECHO = "return {KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), {ARGV[4], false, 7}}"


def client(server: RedisServer) -> RespClient:
    return RespClient(server.url, connect_timeout=1.0, stall=1.5)


def test_replies_of_every_kind_and_size_come_back_to_their_own_steps(redis_server: RedisServer) -> None:
    async def check() -> None:
        resp = client(redis_server)
        key = fresh_prefix("resp")
        big = os.urandom(1_500_000).hex()  # 3 MB: its reply comes in many reads
        try:
            assert await resp.call("SET", key, big) == "OK"
            replies = await asyncio.gather(
                resp.call("GET", key),
                resp.call("STRLEN", key),
                resp.call("GET", key + ":none"),
                resp.call("MGET", key + ":none", key),
                *(resp.call("ECHO", f"{n} \u00e9 \ud800") for n in range(200)),  # (a lone surrogate passes)
            )
            assert replies[:4] == [big, len(big), None, [None, big]]
            assert replies[4:] == [f"{n} \u00e9 \ud800" for n in range(200)]
            with pytest.raises(rx.ResponseError, match="wrong number of arguments"):
                await resp.call("GET")
            assert await resp.call("PING") == "PONG"  # an error reply leaves the connection in step
        finally:
            await resp.call("DEL", key)
            resp.close()

    asyncio.run(check())


def test_a_script_step_packs_its_keys_and_head_once_and_its_own_arguments_each_time(
    redis_server: RedisServer,
) -> None:
    async def check() -> None:
        resp = client(redis_server)
        key = fresh_prefix("resp").encode()
        try:
            answers = await asyncio.gather(
                *(resp.script(ECHO, [key], (b"head", "h\u00e9"), [n, f"own {n}"]) for n in range(50))
            )
            assert answers == [[key.decode(), "head", "h\u00e9", n, [f"own {n}", None, 7]] for n in range(50)]
            assert len(resp._starts) == 1  # one prefix for one script, keys and head
            assert await resp.script(ECHO, [key + b"2"], (b"x", "y"), [1, "z"]) == [
                key.decode() + "2",
                "x",
                "y",
                1,
                ["z", None, 7],
            ]
            assert len(resp._starts) == 2
            await resp.call("SCRIPT", "FLUSH")  # Redis forgot it: loaded again by EVAL, same answer
            assert await resp.script(ECHO, [key], (b"head", "h\u00e9"), [3, "again"]) == [
                key.decode(),
                "head",
                "h\u00e9",
                3,
                ["again", None, 7],
            ]
        finally:
            resp.close()

    asyncio.run(check())
