"""The shared store: one world in Redis (or Valkey), for every process pointed at it.

``RedisStore`` implements the Store protocol (store.py): its steps go over one pipelined connection
a process (resp.py), its batches and long steps through redis-py's asyncio client. Each step
that changes the world is one Lua script (EVALSHA, one round trip), so it is
atomic for every replica: the charge with its balance check and ledger entry, refund once (a task id
added to a set, SADD's answer says whether it was the first), finish once (a compare-and-set on the
task's final status, refunding a failure in the same script), counters, token buckets, the
next-outcome queue, settling what is due (the due zset's entries taken with ZRANGEBYSCORE, removed,
and each task finished as planned in the same script: two replicas never both settle a task) and
eviction of finished tasks. A request's first step is all its work but the charge: a poll is one
script (``poll``: the world's generation and clock read, what is due settled, the account and the
task read, the poll counted), a submit two (``reserve``, then ``submit``: the number the task's id
is drawn from must come back before the task can be written).

Keys. Everything lives under ``{prefix}:`` (the braces are a Redis Cluster hash tag: one world's keys
share one slot, so scripts may touch any of them). The world itself is a fixed set of keys under
``{prefix}:w:`` (``WORLD_KEYS``: accounts' balances, names and order; tasks, their polls and final
statuses; the due zset; counters, buckets, the next-outcome queue), plus one list per account's ledger
(``w:l:<key>``) and one per next-outcome bucket (``w:nb:<model,key>``). A task is one hash field: a
compact string of its own fields and its ``Plan`` (as JSON; decoded plans are cached, so tasks share
them as in memory). Outside the world: ``seq`` (the sequence; ``take`` keeps it), ``clock`` and
``meta`` (the seed and scenario a replica joins).
``clear`` deletes the world's keys in one script (it knows them: the fixed names, and the ledger and
bucket lists found from the world's own hashes), and nothing of another prefix.

The clock. ``clock`` is a local object the world reads synchronously. A manual clock's time is kept
in Redis (``{prefix}:clock``, the time as ``repr(float)``, or ``real``): ``set_clock`` and
``advance_clock`` write it (an advance is a compare-and-set, so the time adds up exactly as a
ManualClock's would), and every step that begins a request (``get_account``, ``poll``, ``reserve``:
the Lua ``world``), ``get_meta`` (joining) and ``refresh()`` bring the local clock to the shared time,
so an advance on one replica is seen by all from their next request on. Those steps settle by the
world's time read in Redis: the manual clock's, or Redis's ``TIME`` (which a real clock's local
``now`` follows too, by the offset measured at each of them).

``staged``/``take``: a new world is built under a private space ``{prefix}:staged-<hex>:`` (not seen
by anyone), then ``take`` swaps the two spaces' keys by RENAME in one script: atomic for every
replica. The staged store then holds the old world, which ``release`` unlinks (with a plain
synchronous client, so it can run in a thread).

Bounds as MemoryStore's: ``max_tasks`` (``make_room`` evicts the task that finished first),
``max_accounts``, ``ledger_limit`` per account and ``ledger_total`` in all (oldest first; the balance
stays), MAX_COUNTERS counters (the first seen goes), MAX_BUCKETS buckets (least recently used goes),
NEXT_LIMIT queued outcomes; a step settles at most POP_LIMIT due tasks (the rest: the next step).
The due zset holds a task id once, at its latest time (MemoryStore's heap may also hold an entry
of an evicted task whose id came back: it skips those, as it checks ``finish_at``).
The journal is a bounded stream ``{prefix}:journal`` (redis_journal.py), written in batches in the
background; ``clear`` and ``take`` empty it.

Failure: each step has STEP_TIMEOUT (1.5 s) for all of it, connecting (at most CONNECT_TIMEOUT) and
one immediate retry on a broken connection (what a pooled connection is after Redis restarted)
included. Past that, and when Redis refuses to serve (out of memory, a read-only replica, busy, a cluster down), a step
raises ``StoreUnavailable``: it may or may not have happened; the next one connects afresh. A retried
step may run twice if only its answer was lost (the connection broke after Redis ran it): ``submit``
is idempotent for that (the same task again is "done"); refund and finish are once-only anyway (the
retry answers False); a counter, a token, a poll count or a queued outcome may move by one more, and a
top-up (``credit``) or ``advance_clock`` may apply twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import redis
import redis.asyncio as aredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from .clock import Clock, ManualClock, SystemClock
from .journal import MAX_BYTES as JOURNAL_BYTES
from .journal import Journal, ascii_json
from .models import FAILED, NEVER, SUCCEEDED, Account, Ledger, NextOutcome, Plan, Task, newest
from .redis_journal import RedisJournal
from .resp import RespClient
from .store import MAX_BUCKETS, MAX_COUNTERS, NEXT_LIMIT, Reserved, Store, StoreUnavailable, ledger_bounds

__all__ = ["CONNECT_TIMEOUT", "POP_LIMIT", "STEP_TIMEOUT", "WORLD_KEYS", "RedisStore"]

CONNECT_TIMEOUT = 1.0  # seconds; redis-py's 5 s default would hold a request far past a 503's use
# A step's deadline, all of it (connecting, a retry, the reply), kept here with asyncio.timeout rather
# than by redis-py's socket timeout, whose asyncio.wait_for makes a Task for every command sent.
STEP_TIMEOUT = 1.5
POOL_SIZE = 64  # connections to Redis per process at most (requests beyond wait for one)
BATCH_TIMEOUT = 30.0  # for each batch of writes that builds a staged world, and of release's unlinks
BATCH = 10_000  # commands sent in one batch
POP_LIMIT = 10_000  # due tasks settled by one step (one script must not hold Redis for long)
PAGE = 1_000  # tasks read by one script when listing them all

# The world's fixed keys (under {prefix}:w:), what clear deletes and take swaps.
WORLD_KEYS = (
    "credits", "names", "order", "aseq",  # accounts: key -> balance, key -> name, key by order of arrival
    "entries", "lseq",  # every ledger entry kept, oldest first ("seq|key"), for the bound on all of them
    "tasks", "polls", "final", "torder", "tseq",  # tasks: id -> fields, id -> polls, id -> final status, order
    "finished", "refunded", "due",  # ids in the order they finished; ids refunded; id by when it finishes
    "counters", "corder", "buckets", "blru", "bseq",  # counters (first seen first), buckets (by last use)
    "next", "nextn", "nseq", "nbs",  # queued outcomes: seq -> entry, seq -> count; the bucket lists
)  # fmt: skip
_INDEX = {name: i for i, name in enumerate(WORLD_KEYS)}
TAKEN_KEYS = tuple(k for k in WORLD_KEYS if k not in ("counters", "corder", "buckets", "blru", "bseq"))

# Every script sees ARGV[1..4]: the world's key base and the ledger bounds (for ``log``), its own after.
_PRELUDE = """
local B = ARGV[1]
-- An integer as Redis reads one: a Lua number is sent as '%.17g', and a negated zero ("-0") is no integer
local function int(x) return string.format('%d', x) end
local LIMIT, TOTAL, BATCH = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function log(acct, kind, amount, at, task_id)
  local seq = redis.call('INCR', B .. 'lseq')
  local ledger = B .. 'l:' .. acct
  -- (string.format: '..' writes a number with 14 digits, and a balance may have 16)
  local entry = string.format('%d|%s|%d|%s|%s', seq, kind, tonumber(amount), at, task_id)
  local n = redis.call('RPUSH', ledger, entry)
  if n > LIMIT then redis.call('LTRIM', ledger, n - LIMIT, -1) end
  local e = redis.call('RPUSH', B .. 'entries', string.format('%d|%s', seq, acct))
  if e > TOTAL then
    -- the oldest entries of all go (a batch under the bound); an entry the per-account bound dropped
    -- already is no longer its ledger's head (the seq tells), and only its item goes
    while e > TOTAL - BATCH do
      local s, k = string.match(redis.call('LPOP', B .. 'entries'), '^(%d+)|(.*)$')
      local l = B .. 'l:' .. k
      local head = redis.call('LINDEX', l, 0)
      if head and string.sub(head, 1, #s + 1) == s .. '|' then redis.call('LPOP', l) end
      e = e - 1
    end
  end
end
local function refund(id, acct, amount, at)
  if amount == 0 or redis.call('HEXISTS', B .. 'credits', acct) == 0 then return 0 end
  if redis.call('SADD', B .. 'refunded', id) == 0 then return 0 end
  redis.call('HINCRBY', B .. 'credits', acct, int(amount))
  log(acct, 'refund', amount, at, id)
  return 1
end
-- A task's charge and key, and the flag after the key (its planned outcome), read off its head:
-- "<credits> <key's bytes> <key><S|F>..." (RedisStore._encode)
local function head(blob)
  local credits, n = string.match(blob, '^(%d+) (%d+) ')
  local start = #credits + #n + 3
  local stop = start + tonumber(n)
  return tonumber(credits), string.sub(blob, start, stop - 1), string.sub(blob, stop, stop)
end
-- The tasks due by now finished as planned, a failure refunded (at most limit, earliest first); how many.
-- The final status is "[status,at]": the message of a failure is its plan's (RedisStore._decode).
local function settle(now, limit)
  local due = redis.call('ZRANGEBYSCORE', B .. 'due', '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  redis.call('ZREMRANGEBYRANK', B .. 'due', 0, #due / 2 - 1)
  local tasks, final, done = B .. 'tasks', B .. 'final', 0
  for i = 1, #due, 2 do
    local id, at = due[i], due[i + 1]
    local blob = redis.call('HGET', tasks, id)
    if blob and redis.call('HEXISTS', final, id) == 0 then
      local credits, acct, planned = head(blob)
      local failed = planned == 'F'
      redis.call('HSET', final, id, string.format('[%d,%s]', failed and FAILED or SUCCEEDED, at))
      redis.call('RPUSH', B .. 'finished', id)
      if failed then refund(id, acct, credits, at) end
      done = done + 1
    end
  end
  return done
end
-- What every step that begins a request reads, in one string (one reply to parse, not three): "<Redis's
-- time> <the clock, '-' if not set>[ <the world's generation, if set>]" (RedisStore._read); and the
-- world's time now (the manual clock's, else Redis's: one time source for every host).
local function world(clock_key, gen_key)
  local t = redis.call('TIME')
  local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  local clock = redis.call('GET', clock_key)
  local read = now .. ' ' .. (clock or '-')
  local gen = redis.call('GET', gen_key)
  if gen then read = read .. ' ' .. gen end
  if clock and clock ~= 'real' then now = clock end
  return read, now, gen
end
""".replace("FAILED", str(FAILED)).replace("SUCCEEDED", str(SUCCEEDED))

# KEYS: credits, names, clock, generation; ARGV: key
_GET_ACCOUNT = """
local read = world(KEYS[3], KEYS[4])
return {read, redis.call('HGET', KEYS[1], ARGV[5]), redis.call('HGET', KEYS[2], ARGV[5])}
"""

# ARGV: key, credits, has a name ("1"/"0"), name, max accounts, then (kind, amount, at, task id) each entry
_ADD_ACCOUNT = """
local credits, names, order = KEYS[1], KEYS[2], KEYS[3]
local key = ARGV[5]
local kept = redis.call('HGET', credits, key)
if kept then return {0, kept, redis.call('HGET', names, key)} end
if redis.call('HLEN', credits) >= tonumber(ARGV[9]) then return {-1} end
redis.call('HSET', credits, key, ARGV[6])
if ARGV[7] == '1' then redis.call('HSET', names, key, ARGV[8]) end
redis.call('ZADD', order, redis.call('INCR', KEYS[4]), key)
for i = 10, #ARGV, 4 do log(key, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
return {1}
"""

_ACCOUNTS = """
local keys = redis.call('ZRANGE', KEYS[1], ARGV[5], ARGV[6])
local credits, names = {}, {}
for i = 1, #keys, 1000 do
  local part = {unpack(keys, i, math.min(i + 999, #keys))}
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(part))) do credits[#credits + 1] = v end
  local got = redis.call('HMGET', KEYS[3], unpack(part))
  for j = 1, #part do names[#names + 1] = got[j] or '\\0' end
end
return {keys, credits, names}
"""

_CREDIT = """
local c = redis.call('HGET', KEYS[1], ARGV[5])
if not c then return false end
local applied = math.max(tonumber(ARGV[6]), -tonumber(c))
local balance = redis.call('HINCRBY', KEYS[1], ARGV[5], int(applied))
log(ARGV[5], ARGV[8], applied, ARGV[7], ARGV[9])
return balance
"""

_REFUND = "return refund(ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8])"

# ARGV: id, key, cost, the task's fields, created at, finish at ('' for never)
_SUBMIT = """
local tasks, credits = KEYS[1], KEYS[2]
local id, key, cost = ARGV[5], ARGV[6], tonumber(ARGV[7])
local kept = redis.call('HGET', tasks, id)
if kept == ARGV[8] then return 1 end  -- this very submit, retried after its answer was lost: done already
if kept then return -1 end
local balance = redis.call('HGET', credits, key)
if not balance or tonumber(balance) < cost then return 0 end
redis.call('HINCRBY', credits, key, int(-cost))
log(key, 'charge', cost, ARGV[9], id)
redis.call('HSET', tasks, id, ARGV[8])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), id)
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[5], ARGV[10], id) end
return 1
"""

# K: tasks, finished, final, polls, torder, refunded
_MAKE_ROOM_FN = """
local function make_room(K, max)
  local tasks, finished, final = K[1], K[2], K[3]
  if redis.call('HLEN', tasks) < max then return 1 end
  while true do
    local id = redis.call('LPOP', finished)
    if not id then return 0 end
    if redis.call('HEXISTS', final, id) == 1 then  -- (not a newer task that reused an evicted id)
      redis.call('HDEL', tasks, id)
      redis.call('HDEL', K[4], id)
      redis.call('HDEL', final, id)
      redis.call('ZREM', K[5], id)
      redis.call('SREM', K[6], id)
      if redis.call('HLEN', tasks) < max then return 1 end
      return 0
    end
  end
end
"""
_MAKE_ROOM = _MAKE_ROOM_FN + "return make_room(KEYS, tonumber(ARGV[5]))"

_GET_TASK = """
local blob = redis.call('HGET', KEYS[1], ARGV[5])
if not blob then return false end
return {blob, redis.call('HGET', KEYS[2], ARGV[5]), redis.call('HGET', KEYS[3], ARGV[5])}
"""

_TASKS = """
local ids = redis.call('ZRANGE', KEYS[1], ARGV[5], ARGV[6])
if #ids == 0 then return {} end
return {ids, redis.call('HMGET', KEYS[2], unpack(ids)), redis.call('HMGET', KEYS[3], unpack(ids)),
        redis.call('HMGET', KEYS[4], unpack(ids))}
"""

_COUNT_POLL = """
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
"""

# KEYS: credits, names, clock, generation, tasks, polls, final; ARGV: the generation expected ('*': any), id,
# key, open keys ("1"/"0"), pop limit. settle's, get_account's and count_poll's work in one, for a task of
# this key (another key's task is not counted: it is not found); nothing when the generation is another.
_POLL = """
local read, now, gen = world(KEYS[3], KEYS[4])
if ARGV[5] ~= '*' and gen ~= ARGV[5] then return {read} end
settle(now, ARGV[9])
local id, key = ARGV[6], ARGV[7]
local credits = redis.call('HGET', KEYS[1], key)
if not credits and ARGV[8] ~= '1' then return {read, false} end
local name = redis.call('HGET', KEYS[2], key)
local blob = redis.call('HGET', KEYS[5], id)
if not blob then return {read, credits, name} end
local _, acct = head(blob)
if acct ~= key then return {read, credits, name} end
return {read, credits, name, blob, redis.call('HINCRBY', KEYS[6], id, 1), redis.call('HGET', KEYS[7], id)}
"""

# ARGV: id, failed ("1"/"0"), at, the final status as stored
_FINISH = """
local blob = redis.call('HGET', KEYS[1], ARGV[5])
if not blob or redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[8])
redis.call('RPUSH', KEYS[3], ARGV[5])
if ARGV[6] == '1' then
  local credits, acct = head(blob)
  refund(ARGV[5], acct, credits, ARGV[7])
end
return 1
"""

_SETTLE = "return settle(ARGV[5], ARGV[6])"

_COUNT = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[5], 1)
if n == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[5])
  if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[6]) then  -- the counter first seen longest ago goes
    redis.call('HDEL', KEYS[1], redis.call('LPOP', KEYS[2]))
  end
end
return n
"""

# ARGV: bucket, burst, rate, now, max buckets. A bucket not kept is a full one (as in MemoryStore).
_TAKE_TOKEN = """
local buckets, lru = KEYS[1], KEYS[2]
local burst, rate, now = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local tokens, last = burst, now
local kept = redis.call('HGET', buckets, ARGV[5])
if kept then
  local t, l = string.match(kept, '^([^|]+)|(.+)$')
  tokens, last = tonumber(t), tonumber(l)
end
tokens = math.min(burst, tokens + (now - last) * rate)
local taken = tokens >= 1
if taken then tokens = tokens - 1 end
redis.call('HSET', buckets, ARGV[5], string.format('%.17g', tokens) .. '|' .. ARGV[8])
redis.call('ZADD', lru, redis.call('INCR', KEYS[3]), ARGV[5])
if redis.call('ZCARD', lru) > tonumber(ARGV[9]) then
  redis.call('HDEL', buckets, redis.call('ZPOPMIN', lru)[1])
end
if taken then return 1 end
return 0
"""

# KEYS: next, nextn, nseq, nbs, the entry's bucket; ARGV: the entry, its count, its bucket's name, limit
_QUEUE_NEXT = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[8]) then return -1 end
local s = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], s, ARGV[5])
redis.call('HSET', KEYS[2], s, ARGV[6])
redis.call('RPUSH', KEYS[5], s)
redis.call('SADD', KEYS[4], ARGV[7])
return redis.call('HLEN', KEYS[1])
"""

# K: next, nextn, nbs, then the four buckets that can match; names: theirs
_TAKE_NEXT_FN = """
local function take_next(K, names)
  local best, first, name = nil, nil, nil
  for i = 4, 7 do
    local s = redis.call('LINDEX', K[i], 0)
    if s and (not best or tonumber(s) < first) then best, first, name = K[i], tonumber(s), names[i - 3] end
  end
  if not best then return false end
  local n = redis.call('HINCRBY', K[2], first, -1)
  local entry = redis.call('HGET', K[1], first)
  if n <= 0 then
    redis.call('LPOP', best)
    redis.call('HDEL', K[1], first)
    redis.call('HDEL', K[2], first)
    if redis.call('LLEN', best) == 0 then redis.call('SREM', K[3], name) end
  end
  return {entry, n}
end
"""
_TAKE_NEXT = _TAKE_NEXT_FN + "return take_next(KEYS, {ARGV[5], ARGV[6], ARGV[7], ARGV[8]})"

# KEYS: credits, names, clock, generation, make_room's 6, the sequence, take_next's 7; ARGV: the generation
# expected ('*': any), key, cost, max tasks, pop limit, take_next's 4 names. A submit's steps before its
# charge, in one: settle's, get_account's, then when the balance covers the cost and there is room a number
# and a queued outcome (nothing is used up otherwise); nothing at all when the generation is another.
_RESERVE = (
    _MAKE_ROOM_FN
    + _TAKE_NEXT_FN
    + """
local read, now, gen = world(KEYS[3], KEYS[4])
if ARGV[5] ~= '*' and gen ~= ARGV[5] then return {read} end
settle(now, ARGV[9])
local credits = redis.call('HGET', KEYS[1], ARGV[6])
if not credits then return {read, false} end
local name = redis.call('HGET', KEYS[2], ARGV[6])
if tonumber(credits) < tonumber(ARGV[7]) then return {read, credits, name, 0, 1} end
if make_room({unpack(KEYS, 5, 10)}, tonumber(ARGV[8])) == 0 then return {read, credits, name, 0, 0} end
local seq = redis.call('INCR', KEYS[11])
return {read, credits, name, seq, 1, take_next({unpack(KEYS, 12, 18)}, {ARGV[10], ARGV[11], ARGV[12], ARGV[13]})}
"""
)

_QUEUED = "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}"

# KEYS: next, nextn, nbs, nseq
_CLEAR_NEXT = """
for _, b in ipairs(redis.call('SMEMBERS', KEYS[3])) do redis.call('UNLINK', B .. 'nb:' .. b) end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""

# Deletes the world whose base is B (ARGV[5..]: the names of its fixed keys); KEYS[1]: a key beside it
# (the sequence, deleted with it by clear; take passes none). The ledger and bucket lists are found
# from the world's own hashes.
_WORLD_LISTS = """
local function lists(base)
  local found = {}
  for _, k in ipairs(redis.call('HKEYS', base .. 'credits')) do found[#found + 1] = 'l:' .. k end
  for _, b in ipairs(redis.call('SMEMBERS', base .. 'nbs')) do found[#found + 1] = 'nb:' .. b end
  for i = 5, #ARGV do found[#found + 1] = ARGV[i] end
  return found
end
"""

_CLEAR = (
    _WORLD_LISTS
    + """
for _, name in ipairs(lists(B)) do redis.call('UNLINK', B .. name) end
redis.call('UNLINK', KEYS[1])
return 1
"""
)

# ARGV[5]: the staged world's base (the key base of this script's ARGV[1] is the world's), then names
_TAKE = (
    _WORLD_LISTS
    + """
local S = table.remove(ARGV, 5)
local names, seen = {}, {}
for _, base in ipairs({B, S}) do
  for _, name in ipairs(lists(base)) do
    if not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
end
local tmp = S .. 'swap'
for _, name in ipairs(names) do
  local a, b = B .. name, S .. name
  local ea, eb = redis.call('EXISTS', a) == 1, redis.call('EXISTS', b) == 1
  if ea and eb then
    redis.call('RENAME', a, tmp); redis.call('RENAME', b, a); redis.call('RENAME', tmp, b)
  elseif ea then redis.call('RENAME', a, b)
  elseif eb then redis.call('RENAME', b, a) end
end
return #names
"""
)

# ARGV[1]: what the caller last knew of the time ('' for none), ARGV[2]: the time after its advance
_ADVANCE = """
local now = redis.call('GET', KEYS[1])
if (now or '') == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]); return {1, ARGV[2]} end
return {0, now}
"""

_SCRIPTS = {
    "get_account": _GET_ACCOUNT, "add_account": _ADD_ACCOUNT, "accounts": _ACCOUNTS, "credit": _CREDIT,
    "refund": _REFUND, "submit": _SUBMIT, "make_room": _MAKE_ROOM, "get_task": _GET_TASK, "tasks": _TASKS,
    "count_poll": _COUNT_POLL, "poll": _POLL, "finish": _FINISH, "settle": _SETTLE, "count": _COUNT,
    "take_token": _TAKE_TOKEN, "queue_next": _QUEUE_NEXT, "take_next": _TAKE_NEXT, "reserve": _RESERVE,
    "queued": _QUEUED, "clear_next": _CLEAR_NEXT, "clear": _CLEAR, "take": _TAKE,
}  # fmt: skip
_OWN_ARGV = {"advance": _ADVANCE}  # scripts of their own arguments (no world, no prelude)

_NO_NAME = "\0"  # a name HMGET did not find (an account without one)
_DOWN = (rx.ConnectionError, rx.TimeoutError, OSError)
# What Redis answers while it cannot serve (out of memory, a read-only replica, a cluster in flux, busy
# with a script, no replicas; loading is a ConnectionError already): unavailable too, not a bug of ours.
_NOT_NOW = (rx.OutOfMemoryError, rx.ReadOnlyError, rx.MasterDownError, rx.ClusterDownError, rx.TryAgainError)
_NOT_NOW_CODES = ("BUSY", "NOREPLICAS")


def _reraise(url: str, error: Exception) -> NoReturn:
    """``error`` as StoreUnavailable when it means Redis is away or cannot serve now; else as it is."""
    if (
        isinstance(error, _DOWN + _NOT_NOW)
        or isinstance(error, rx.ResponseError)
        and str(error).startswith(_NOT_NOW_CODES)
    ):
        raise StoreUnavailable(f"the Redis store at {url} is unavailable: {error}") from error
    raise error


def _glob(text: str) -> str:
    """``text`` as a literal in a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _bucket(model_id: str | None, key: str | None) -> str:
    return json.dumps([model_id, key], ensure_ascii=False)


class RedisTime(SystemClock):
    """The real clock as Redis tells it: this host's time plus the offset to Redis's TIME measured at
    each request's first step, so that every host settles tasks by one time source."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


class RedisStore:
    """One world in Redis, shared by every RedisStore of the same URL and prefix (module docstring).

    ``url``: ``redis://host:port/db``, ``rediss://...`` or ``unix:///path.sock?db=0``; ``prefix``: the
    world's name in that Redis (several worlds can share one). Bounds as MemoryStore's."""

    immediate = False
    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "mockgen",
        max_tasks: int = 1_000_000,
        journal_limit: int = 10_000,
        ledger_limit: int | None = None,
        *,
        max_accounts: int = 100_000,
        ledger_total: int | None = None,
        journal_bytes: int = JOURNAL_BYTES,
        _client: aredis.Redis | None = None,
        _space: str = "w",
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"a store prefix is a non-empty name without braces, not {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.max_tasks = max_tasks
        self.max_accounts = max_accounts
        self.ledger_limit, self.ledger_total = ledger_bounds(max_tasks, ledger_limit, ledger_total)
        self._time = RedisTime()  # the real clock: Redis's, read by every step that begins a request
        self.clock: Clock = self._time
        self._owns_client = _client is None  # (a staged store borrows its world's)
        if _client is None:
            # A blocking pool: past POOL_SIZE connections a step waits for one (within its deadline),
            # where redis-py's default pool refuses it (MaxConnectionsError) at 100.
            pool = aredis.BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=STEP_TIMEOUT, **self._options(AsyncRetry)
            )
            _client = aredis.Redis(connection_pool=pool)
        self._client = _client
        root = f"{{{prefix}}}:"
        self._base = f"{root}{_space}:"
        self._seq_key, self._clock_key = (root + "seq").encode(), (root + "clock").encode()
        self._meta_key, self._gen_key = (root + "meta").encode(), (root + "gen").encode()
        self.generation = ""  # the world's generation as last seen (every step that begins a request reads it)
        options = self._options(AsyncRetry)
        # Steps go through one pipelined connection of our own (resp.py: a step through redis-py costs
        # several times as much CPU); long steps, batches and TLS (rediss://) through redis-py's pool.
        fast = self._owns_client and url.startswith(("redis://", "unix://"))
        self._fast = RespClient(url, CONNECT_TIMEOUT, STEP_TIMEOUT) if fast else None
        journal = RedisJournal(_client, url, self._base, journal_limit, journal_bytes, options=options, fast=self._fast)
        self.journal: Journal = journal
        self._journal = journal  # (as what it is: closed with the store)
        batch = max(1, self.ledger_total // 64)
        # Keys and the world's arguments encoded once: redis-py passes bytes through as they are.
        self._batch = batch
        self._world = tuple(str(v).encode() for v in (self._base, self.ledger_limit, self.ledger_total, batch))
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(_PRELUDE + source) for name, source in _SCRIPTS.items()
        }
        self._scripts.update({name: self._client.register_script(s) for name, s in _OWN_ARGV.items()})
        self._sources = {name: _PRELUDE + source for name, source in _SCRIPTS.items()}
        k = [(self._base + name).encode() for name in WORLD_KEYS]
        self._keys = {name: k[i] for name, i in _INDEX.items()}
        # Decoded plans by their JSON (most tasks share a handful), and encoded ones by the plan object.
        self._plans: dict[str, Plan] = {}
        self._plan_json: dict[int, tuple[Plan, str]] = {}
        self._fixed: dict[str, tuple[Any, ...]] = {}  # a task's fixed fields by what Redis holds of them
        self._finals: dict[str, tuple[Any, ...]] = {}  # and its final status, time (and message) by theirs
        # take_next's keys, its bucket names and reserve's keys by model and key (see _next_keys)
        self._next_cache: dict[tuple[str, str], tuple[list[str | bytes], list[str], list[str | bytes]]] = {}
        begin = [*self._k("credits", "names"), self._clock_key, self._gen_key]  # (what the Lua ``world`` reads)
        self._poll_keys = [*begin, *self._k("tasks", "polls", "final")]
        room = self._k("tasks", "finished", "final", "polls", "torder", "refunded")  # (make_room's)
        self._reserve_keys = [*begin, *room, self._seq_key]
        self._submit_keys = self._k("tasks", "credits", "torder", "tseq", "due")

    @staticmethod
    def _options(retry: Any) -> dict[str, Any]:
        return {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": None,  # (STEP_TIMEOUT instead; a cancelled read closes its connection)
            # One immediate retry, on a broken connection only (e.g. after Redis restarted).
            "retry": retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)),
            "decode_responses": True,
            "encoding_errors": "surrogatepass",  # keys and prompts as JSON may hold lone surrogates
        }

    def _k(self, *names: str) -> list[str | bytes]:
        keys = self._keys
        return [keys[name] for name in names]

    async def _run(self, script: str, keys: Sequence[str | bytes], *args: Any, timeout: float = STEP_TIMEOUT) -> Any:
        fast = self._fast
        try:
            async with asyncio.timeout(timeout):
                if fast is not None and timeout == STEP_TIMEOUT:  # (a long step keeps a pooled connection)
                    return await fast.script(self._sources[script], keys, self._world, args)
                return await self._scripts[script](keys, (*self._world, *args))
        except (*_DOWN, rx.RedisError) as error:
            _reraise(self.url, error)

    async def _cmd(self, *args: Any) -> Any:
        fast = self._fast
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                if fast is not None:
                    return await fast.call(*args)
                return await self._client.execute_command(*args)
        except (*_DOWN, rx.RedisError) as error:
            _reraise(self.url, error)

    async def ping(self) -> bool:
        """Whether Redis answers now (StoreUnavailable when not)."""
        return bool(await self._cmd("PING"))

    async def close(self) -> None:
        """Close this store's connections (a later step opens new ones); a staged store's are its world's."""
        if self._owns_client:
            await self._journal.close()  # (first: what it flushes goes over the pipelined connection)
        if self._fast is not None:
            self._fast.close()
        if self._owns_client:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()

    async def clear(self) -> None:
        await self._run("clear", [self._seq_key], *WORLD_KEYS, timeout=BATCH_TIMEOUT)  # (O(accounts))
        await self.journal.wipe()

    # accounts and credits
    async def get_account(self, key: str) -> Account | None:
        keys = [*self._k("credits", "names"), self._clock_key, self._gen_key]
        read, credits, name = await self._run("get_account", keys, key)
        self._read(read)
        return None if credits is None else Account(key, int(credits), name)

    def _read(self, read: str) -> float:
        """Bring the local clock, the offset to Redis's time and the generation up to date from what a
        step that begins a request read (the Lua ``world``); the world's time then."""
        parts = read.split(" ", 2)
        shared = parts[1]
        self._sync_clock(None if shared == "-" else shared)
        now = float(parts[0])
        self._time.offset = now - time.time()
        if len(parts) > 2:
            self.generation = parts[2]
        clock = self.clock
        return clock.now() if isinstance(clock, ManualClock) else now

    async def add_account(self, account: Account) -> Account | None:
        has_name = account.name is not None
        entries = [v for e in account.ledger for v in (e.kind, e.amount, repr(e.at), e.task_id or "")]
        reply = await self._run(
            "add_account", self._k("credits", "names", "order", "aseq"),
            account.key, account.credits, int(has_name), account.name if has_name else "", self.max_accounts,
            *entries,
        )  # fmt: skip
        if reply[0] == 0:
            return Account(account.key, int(reply[1]), reply[2] if len(reply) > 2 else None)
        if reply[0] < 0:
            return None
        account.stored = True
        return Account(account.key, account.credits, account.name)

    async def accounts(self, newest: int | None = None) -> list[Account]:
        start = 0 if newest is None else -newest
        if newest == 0:
            return []
        keys, credits, names = await self._run("accounts", self._k("order", "credits", "names"), start, -1)
        return [
            Account(key, int(c), None if n == _NO_NAME else n)
            for key, c, n in zip(keys, credits, names, strict=True)
            if c is not None
        ]

    async def account_count(self) -> int:
        return int(await self._cmd("HLEN", self._keys["credits"]))

    async def ledger(self, key: str) -> Ledger:
        ledger = Ledger()
        for item in await self._cmd("LRANGE", self._base + "l:" + key, 0, -1):
            _, kind, amount, at, task_id = item.split("|", 4)
            ledger.add(kind, int(amount), float(at), task_id or None)
        return ledger

    async def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None = None) -> int:
        balance = await self._run("credit", self._k("credits"), key, amount, repr(at), kind, task_id or "")
        if balance is None:
            raise KeyError(key)
        return int(balance)

    async def refund(self, task: Task, at: float) -> bool:
        return bool(
            await self._run("refund", self._k("refunded", "credits"), task.task_id, task.key, task.credits, repr(at))
        )

    # tasks
    def _encode(self, task: Task) -> str:
        """The task's fixed fields as one string: "<credits> <key's bytes> <key><S|F><plan JSON>\\n<own JSON>"
        (scripts read the charge, the key and the planned outcome, success or failed, off its head; Lua
        counts bytes)."""
        plan = task.plan
        cached = self._plan_json.get(id(plan))
        if cached is None or cached[0] is not plan:
            if len(self._plan_json) >= 4096:
                self._plan_json.clear()
            cached = (plan, json.dumps(plan, separators=(",", ":")))
            self._plan_json[id(plan)] = cached
        own = ascii_json(
            [task.prompt, task.aspect_ratio, task.image_urls, task.created_at, task.request_id, task.running_at,
             task.finish_at],
        )  # fmt: skip
        key = task.key
        size = len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass"))
        planned = "S" if plan.outcome == "success" else "F"  # (what settling finishes it with)
        return f"{plan.credits} {size} {key}{planned}{cached[1]}\n{own}"

    def _decode(self, task_id: str, blob: str, polls: str | None, final: str | None) -> Task:
        fixed = self._fixed.get(blob)  # (a task is polled many times: its fixed fields decoded once)
        if fixed is None:
            fixed = self._fixed_fields(blob)
            if len(self._fixed) >= 4096:
                self._fixed.clear()
            self._fixed[blob] = fixed
        plan = fixed[0]
        task = Task(plan, task_id, *fixed[1:], int(polls) if polls else 0)  # type: ignore[arg-type, call-arg]
        if final is not None:
            settled = self._finals.get(final)
            if settled is None:
                if len(self._finals) >= 4096:
                    self._finals.clear()
                settled = self._finals[final] = tuple(json.loads(final))
            task.final_status, task.settled_at = settled[0], settled[1]
            # "[status,at]": settled as planned, a failure with its plan's message (the Lua settle)
            if len(settled) > 2:
                task.message = settled[2]
            elif settled[0] == FAILED:
                task.message = plan.failure_message
        return task

    def _fixed_fields(self, blob: str) -> tuple[Any, ...]:
        """What ``_encode`` wrote, as Task takes it: the plan, then key, prompt, aspect ratio, image
        URLs, created at, request id, running at and finish at."""
        _, n, rest = blob.split(" ", 2)
        size = int(n)
        key = rest[:size]
        if not key.isascii():  # the size is in bytes: cut there
            raw = rest.encode("utf-8", "surrogatepass")
            key, rest = raw[:size].decode("utf-8", "surrogatepass"), raw[size:].decode("utf-8", "surrogatepass")
            size = 0
        plan_json, own = rest[size + 1 :].split("\n", 1)  # (after the planned outcome's flag)
        plan = self._plans.get(plan_json)
        if plan is None:
            if len(self._plans) >= 4096:
                self._plans.clear()
            plan = self._plans[plan_json] = Plan(*json.loads(plan_json))
        prompt, aspect_ratio, urls, created_at, request_id, running_at, finish_at = json.loads(own)
        return plan, key, prompt, sys.intern(aspect_ratio), tuple(urls), created_at, request_id, running_at, finish_at

    async def submit(self, task: Task) -> bool | None:
        finish_at = "" if task.finish_at == NEVER else repr(task.finish_at)
        charged = await self._run(
            "submit", self._submit_keys,
            task.task_id, task.key, task.credits, self._encode(task), repr(task.created_at), finish_at,
        )  # fmt: skip
        return None if charged < 0 else bool(charged)

    async def make_room(self) -> bool:
        keys = self._k("tasks", "finished", "final", "polls", "torder", "refunded")
        return bool(await self._run("make_room", keys, self.max_tasks))

    async def get_task(self, task_id: str) -> Task | None:
        got = await self._run("get_task", self._k("tasks", "polls", "final"), task_id)
        return None if got is None else self._decode(task_id, *got)

    async def tasks(self) -> list[Task]:
        """Every task, oldest first: read a page at a time (a task evicted meanwhile may be missed)."""
        found: list[Task] = []
        keys = self._k("torder", "tasks", "polls", "final")
        start = 0
        while True:
            page = await self._run("tasks", keys, start, start + PAGE - 1)
            if not page:
                return found
            for task_id, blob, polls, final in zip(*page, strict=True):
                if blob is not None:
                    found.append(self._decode(task_id, blob, polls, final))
            if len(page[0]) < PAGE:
                return found
            start += PAGE

    async def task_count(self) -> int:
        return int(await self._cmd("HLEN", self._keys["tasks"]))

    async def count_poll(self, task_id: str) -> int:
        polls = int(await self._run("count_poll", self._k("tasks", "polls"), task_id))
        return max(polls, 0)  # (-1: the task is not kept, e.g. another replica evicted it)

    async def poll(
        self, task_id: str, key: str, generation: str | None, open_keys: bool
    ) -> tuple[Account | None, Task | None] | None:
        expected = "*" if generation is None else generation
        got = await self._run("poll", self._poll_keys, expected, task_id, key, int(open_keys), POP_LIMIT)
        self._read(got[0])
        if len(got) == 1:
            return None
        credits = got[1]
        account = None if credits is None else Account(key, int(credits), got[2])
        return account, None if len(got) < 4 else self._decode(task_id, got[3], got[4], got[5])

    async def finish(self, task_id: str, status: int, at: float, message: str | None = None) -> bool:
        failed = status == FAILED
        final = json.dumps([status, at, message if failed else None], separators=(",", ":"))
        keys = self._k("tasks", "final", "finished")
        return bool(await self._run("finish", keys, task_id, int(failed), repr(at), final))

    async def settle(self, now: float) -> int:
        return int(await self._run("settle", self._k("due"), repr(now), POP_LIMIT))

    # counters, buckets, the sequence
    async def count(self, scope: str, key: str) -> int:
        return int(await self._run("count", self._k("counters", "corder"), f"{scope}\0{key}", MAX_COUNTERS))

    async def take_token(self, scope: str, key: str, burst: int, rate: float, now: float) -> bool:
        keys = self._k("buckets", "blru", "bseq")
        return bool(await self._run("take_token", keys, f"{scope}\0{key}", burst, repr(rate), repr(now), MAX_BUCKETS))

    async def next_seq(self) -> int:
        return int(await self._cmd("INCR", self._seq_key))

    # the next-outcome queue
    async def queue_next(self, entry: NextOutcome) -> int | None:
        name = _bucket(entry.model_id, entry.key)
        fields = json.dumps([entry.outcome, entry.model_id, entry.key, entry.message], ensure_ascii=False)
        keys = self._k("next", "nextn", "nseq", "nbs") + [self._base + "nb:" + name]
        length = int(await self._run("queue_next", keys, fields, entry.count, name, NEXT_LIMIT))
        return None if length < 0 else length

    def _next_keys(self, model_id: str, key: str) -> tuple[list[str | bytes], list[str], list[str | bytes]]:
        """take_next's keys, the names of the four buckets a submit of ``model_id`` with ``key`` matches,
        and reserve's keys (made once for each model and key: the same key submits again and again)."""
        found = self._next_cache.get((model_id, key))
        if found is None:
            names = [_bucket(m, k) for m, k in ((model_id, key), (model_id, None), (None, key), (None, None))]
            if len(self._next_cache) >= 4096:
                self._next_cache.clear()
            keys = self._k("next", "nextn", "nbs") + [self._base + "nb:" + name for name in names]
            found = self._next_cache[(model_id, key)] = (keys, names, [*self._reserve_keys, *keys])
        return found

    @staticmethod
    def _taken(got: list[Any] | None) -> NextOutcome | None:
        if got is None:
            return None
        outcome, model, for_key, message = json.loads(got[0])
        return NextOutcome(outcome, int(got[1]), model, for_key, message)

    async def take_next(self, model_id: str, key: str) -> NextOutcome | None:
        keys, names, _ = self._next_keys(model_id, key)
        return self._taken(await self._run("take_next", keys, *names))

    async def reserve(self, key: str, model_id: str, cost: int, generation: str | None) -> Reserved | None:
        _, names, keys = self._next_keys(model_id, key)
        expected = "*" if generation is None else generation
        got = await self._run("reserve", keys, expected, key, cost, self.max_tasks, POP_LIMIT, *names)
        now = self._read(got[0])
        if len(got) == 1:
            return None
        if got[1] is None:
            return Reserved(None, now, 0, None, True)
        account = Account(key, int(got[1]), got[2])
        return Reserved(account, now, int(got[3]), self._taken(got[5] if len(got) > 5 else None), bool(got[4]))

    async def queued(self, limit: int | None = None) -> list[NextOutcome]:
        entries, counts = await self._run("queued", self._k("next", "nextn"))
        count = dict(zip(counts[::2], counts[1::2], strict=True))
        found = []
        for seq, fields in sorted(zip(entries[::2], entries[1::2], strict=True), key=lambda item: int(item[0])):
            outcome, model, key, message = json.loads(fields)
            found.append(NextOutcome(outcome, int(count[seq]), model, key, message))
        return newest(found, limit)

    async def get_meta(self) -> dict[str, Any] | None:
        # The clock comes with it: a replica joining a world serves its manual clock at once (the
        # control API too, before any public request has brought the clock up to date).
        meta, shared = await self._cmd("MGET", self._meta_key, self._clock_key)
        self._sync_clock(shared)
        return None if meta is None else json.loads(meta)  # type: ignore[no-any-return]

    async def set_meta(self, meta: dict[str, Any], only_new: bool = False) -> bool:
        generation = str(meta.get("generation", ""))
        command = "MSETNX" if only_new else "MSET"  # (MSETNX: both keys, only if neither is there)
        done = await self._cmd(command, self._meta_key, json.dumps(meta), self._gen_key, generation)
        if only_new and not done:
            return False
        self.generation = generation
        return True

    async def clear_next(self) -> None:
        await self._run("clear_next", self._k("next", "nextn", "nbs", "nseq"))

    # the clock
    def _sync_clock(self, shared: str | None) -> None:
        """The local clock brought to the shared one (``shared``: the clock key's value; None: not set)."""
        if shared is None:
            return
        clock = self.clock
        if shared == "real":
            if isinstance(clock, ManualClock):
                self.clock = self._time
        elif isinstance(clock, ManualClock):
            now = float(shared)
            if clock.now() != now:
                clock.set(now)
        else:
            self.clock = ManualClock(float(shared))

    async def refresh(self) -> Clock:
        """Bring the local clock to the shared one now (one GET); the clock."""
        self._sync_clock(await self._cmd("GET", self._clock_key))
        return self.clock

    async def set_clock(self, clock: Clock) -> None:
        manual = isinstance(clock, ManualClock)
        await self._cmd("SET", self._clock_key, repr(clock.now()) if manual else "real")
        self.clock = clock if manual else self._time

    async def advance_clock(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        # What the clock key holds, as far as we know: a time, "real", or "" (not set: the local clock's).
        clock = self.clock
        known = repr(clock.now()) if isinstance(clock, ManualClock) else (await self._cmd("GET", self._clock_key) or "")
        for _ in range(100):  # a compare-and-set: another replica's advance in between means try again
            clock = self.clock
            if known == "real" or not known and not isinstance(clock, ManualClock):
                raise ValueError("the clock is real")
            after = repr((float(known) if known else clock.now()) + seconds)
            try:
                async with asyncio.timeout(STEP_TIMEOUT):
                    done, now = await self._scripts["advance"]([self._clock_key], [known, after])
            except (*_DOWN, rx.RedisError) as error:
                _reraise(self.url, error)
            self._sync_clock(now)
            if done:
                return float(after)
            known = now or ""
        raise StoreUnavailable("the shared clock kept moving: 100 advances in a row lost the race")

    # a whole world replaced
    async def staged(
        self, accounts: Iterable[Account], tasks: Iterable[Task], next_outcomes: Iterable[NextOutcome]
    ) -> RedisStore:
        """A store under a space of its own in the same Redis, holding these (written in batches: no
        one else sees that space until ``take`` swaps it in)."""
        staged = RedisStore(
            self.url, self.prefix, self.max_tasks, 1, self.ledger_limit,
            max_accounts=self.max_accounts, ledger_total=self.ledger_total,
            _client=self._client, _space="staged-" + os.urandom(8).hex(),
        )  # fmt: skip
        try:
            await staged._write(list(accounts), list(tasks), list(next_outcomes))
        except (*_DOWN, rx.RedisError) as error:
            _reraise(self.url, error)
        return staged

    async def _write(self, accounts: list[Account], tasks: list[Task], next_outcomes: list[NextOutcome]) -> None:
        """Fill this (empty, unseen) store's space as MemoryStore.staged fills a new store."""
        keys, base = self._keys, self._base
        pipe = self._client.pipeline(transaction=False)
        # Ledgers: every entry numbered in order; past ledger_total the oldest of all go (a batch under).
        entries: deque[tuple[int, str]] = deque()
        ledgers: dict[str, list[str]] = {}
        seq = 0
        for i, account in enumerate(accounts, 1):
            account.stored = True
            pipe.hset(keys["credits"], account.key, account.credits)
            if account.name is not None:
                pipe.hset(keys["names"], account.key, account.name)
            pipe.zadd(keys["order"], {account.key: i})
            await self._flush(pipe, BATCH)
            items = ledgers.setdefault(account.key, [])
            for e in account.ledger:
                seq += 1
                items.append(f"{seq}|{e.kind}|{e.amount}|{e.at!r}|{e.task_id or ''}")
                entries.append((seq, account.key))
        pipe.set(keys["aseq"], len(accounts))
        if len(entries) > self.ledger_total:
            dropped: set[int] = set()
            while len(entries) > self.ledger_total - self._batch:
                dropped.add(entries.popleft()[0])
            for items in ledgers.values():
                items[:] = [item for item in items if int(item.split("|", 1)[0]) not in dropped]
        for key, items in ledgers.items():
            for part in range(0, len(items), PAGE):
                pipe.rpush(base + "l:" + key, *items[part : part + PAGE])
        logged = [f"{s}|{k}" for s, k in entries]
        for part in range(0, len(logged), PAGE):
            pipe.rpush(keys["entries"], *logged[part : part + PAGE])
        pipe.set(keys["lseq"], seq)
        # Tasks as they are; past max_tasks the ones that finished first go (MemoryStore._add_task).
        kept: dict[str, Task] = {}
        finished: deque[str] = deque()
        for task in tasks:
            kept[task.task_id] = task
            if task.final_status:
                finished.append(task.task_id)
            while len(kept) > self.max_tasks and finished:
                gone = finished.popleft()
                if gone in kept and kept[gone].final_status:
                    del kept[gone]
        for i, task in enumerate(kept.values(), 1):
            task_id = task.task_id
            pipe.hset(keys["tasks"], task_id, self._encode(task))
            pipe.zadd(keys["torder"], {task_id: i})
            if task.polls:
                pipe.hset(keys["polls"], task_id, task.polls)
            if task.final_status:
                final = [task.final_status, task.settled_at, task.message]
                pipe.hset(keys["final"], task_id, json.dumps(final, separators=(",", ":")))
                if task.final_status == FAILED and task.credits:
                    pipe.sadd(keys["refunded"], task_id)  # a failed task was refunded when it finished
            elif task.finish_at != NEVER:
                pipe.zadd(keys["due"], {task_id: task.finish_at})
            await self._flush(pipe, BATCH)
        pipe.set(keys["tseq"], len(kept))
        ordered = [task_id for task_id in finished if task_id in kept]
        for part in range(0, len(ordered), PAGE):
            pipe.rpush(keys["finished"], *ordered[part : part + PAGE])
        for i, entry in enumerate(next_outcomes, 1):
            name = _bucket(entry.model_id, entry.key)
            fields = json.dumps([entry.outcome, entry.model_id, entry.key, entry.message], ensure_ascii=False)
            pipe.hset(keys["next"], str(i), fields)
            pipe.hset(keys["nextn"], str(i), entry.count)
            pipe.rpush(base + "nb:" + name, i)
            pipe.sadd(keys["nbs"], name)
        pipe.set(keys["nseq"], len(next_outcomes))
        await self._flush(pipe)

    @staticmethod
    async def _flush(pipe: Any, at_least: int = 0) -> None:
        """Send the pipeline's commands, if it holds ``at_least`` of them (in a deadline of their own)."""
        if len(pipe) >= max(at_least, 1):
            async with asyncio.timeout(BATCH_TIMEOUT):
                await pipe.execute()

    async def take(self, staged: Any) -> None:
        assert isinstance(staged, RedisStore) and staged.prefix == self.prefix
        keys = [self._keys["tasks"], staged._keys["tasks"]]
        # What a state holds is swapped; the counters and buckets stay (as MemoryStore.take keeps them).
        await self._run("take", keys, staged._base, *TAKEN_KEYS, timeout=BATCH_TIMEOUT)  # (O(accounts))
        await self.journal.wipe()

    def release(self) -> None:
        """Unlink this store's keys, a batch at a time (a plain client of its own: fine in a thread)."""
        client = redis.Redis.from_url(self.url, **{**self._options(Retry), "socket_timeout": BATCH_TIMEOUT})
        try:
            batch: list[str] = []
            for key in client.scan_iter(match=_glob(self._base) + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        except (*_DOWN, rx.RedisError) as error:
            _reraise(self.url, error)
        finally:
            client.close()


if TYPE_CHECKING:

    def _is_a_store(store: RedisStore) -> Store:
        return store  # mypy: RedisStore has every step of the Store protocol, with its types
