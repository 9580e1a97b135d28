#!lua name=marconi_v1
--[[
marconi's queue semantics on Redis 7 (the `redis-cluster` backend). Rust (src/shard/redis.rs)
calls these functions; each one is one atomic step on one queue, because every key of a queue
shares its hash tag: KEYS[1] is the queue's base `<prefix>:{<project>/<queue>}` (not a key
itself, it names the slot) and the keys are that base plus a suffix:

  :q      hash   x (present while the queue exists), e (epoch; kept as a tombstone after a
                 delete), s (last message seq), cs (last claim seq), n / nb (messages and body
                 bytes held), m (metadata JSON, verbatim), v (metadata version, for
                 compare-and-set), and the parsed reserved keys: ttl, delay, maxpost, maxcc,
                 dlq, dlqttl
  :log    stream id 0-<seq>: b (body), c (created ms), t (ttl s), d (delay ms), u (client hash)
  :exp    zset   seq -> expires ms (raised by claims): every message held
  :ready  zset   seq -> seq: visible, unclaimed messages (claims and pops take from here, FIFO)
  :dl     zset   seq -> visible-at ms: delayed messages
  :cl     zset   seq -> claim expiry ms: claimed messages
  :st     hash   seq -> "<claim seq>:<deliveries>" (claim seq 0: free now)
  :c      hash   claim seq -> "<secret>:<renewed ms>:<expires ms>:<ttl>:<grace>:<seq,seq..>"
  :ce     zset   claim seq -> expires ms
  :dead   stream dead letters taken out by a claim, waiting to be posted to their DLQ
  :src    zset   "<source queue>/<source message id>" -> ms: dead letters this queue received,
                 so that a retried move never posts one twice (kept DEDUPE_MS)
  :n      sharded pub/sub channel: posts and anything else making messages claimable

Time is the master's clock (TIME), so a queue has one clock. Reads are exact at their moment;
every function that touches messages first does a bounded sweep (claims ended, delays over,
messages expired). Numbers are formatted with fmt() before they reach redis.call: Lua's own
conversion keeps 14 significant digits only.

Errors that callers expect come back as error replies whose first word starts with MQ_ (no
write happened before them except the sweep); anything else is a bug or Redis's own failure.
]]

local SWEEP = 256           -- messages examined per sweep step
local CLAIM_SWEEP = 64      -- ended claims processed per call
local SCAN = 10000          -- log entries one listing examines at most
local DEAD_BATCH = 64       -- dead letters handed back per claim
local DEDUPE_MS = 86400000  -- how long a received dead letter's source id is remembered
local CLIENT_NONE = '0000000000000000'

local function fmt(n)
  return string.format('%.0f', n)
end

-- Claim secrets are capabilities: compared in time that does not depend on where they differ,
-- as the embedded engine compares them.
local function same_secret(a, b)
  if type(a) ~= 'string' or type(b) ~= 'string' or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = bit.bor(diff, bit.bxor(a:byte(i), b:byte(i))) end
  return diff == 0
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function keys_of(base)
  return {
    q = base .. ':q', log = base .. ':log', exp = base .. ':exp', ready = base .. ':ready',
    dl = base .. ':dl', cl = base .. ':cl', st = base .. ':st', c = base .. ':c',
    ce = base .. ':ce', dead = base .. ':dead', src = base .. ':src', n = base .. ':n',
  }
end

-- An error reply `<code> <detail>`: with a space Redis keeps the code as the reply's first word.
local function fail(code, detail)
  return redis.error_reply(code .. ' ' .. (detail or '-'))
end

local function arg_num(v, what)
  local n = tonumber(v)
  if n == nil then
    error('MQ_ARG ' .. what .. ' is not a number: ' .. tostring(v))
  end
  return n
end

local function exists(k)
  return redis.call('HEXISTS', k.q, 'x') == 1
end

local function hnum(key, field)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return nil
end

-- Delivery state of a message: claim seq (0: none) and delivery count.
local function state(k, seq)
  local v = redis.call('HGET', k.st, seq)
  if not v then return 0, 0 end
  local a, b = string.match(v, '^(%d+):(%d+)$')
  return tonumber(a) or 0, tonumber(b) or 0
end

local function claim_get(k, cseq)
  local v = redis.call('HGET', k.c, cseq)
  if not v then return nil end
  local secret, renewed, expires, ttl, grace, seqs =
    string.match(v, '^(%x+):(%d+):(%d+):(%d+):(%d+):(.*)$')
  if not secret then return nil end
  local list = {}
  for s in string.gmatch(seqs, '%d+') do list[#list + 1] = s end
  return { seq = cseq, secret = secret, renewed = tonumber(renewed), expires = tonumber(expires),
           ttl = tonumber(ttl), grace = tonumber(grace), seqs = list }
end

local function claim_put(k, c)
  redis.call('HSET', k.c, c.seq, c.secret .. ':' .. fmt(c.renewed) .. ':' .. fmt(c.expires) .. ':'
    .. fmt(c.ttl) .. ':' .. fmt(c.grace) .. ':' .. table.concat(c.seqs, ','))
end

-- The live claim holding message `seq` at `now` (nil if none), and its delivery count. `cache`
-- maps claim seqs to claims (false: none) within one call that changes no claim.
local function live_claim(k, cache, seq, now)
  local cseq, cc = state(k, seq)
  if cseq == 0 then return nil, cc end
  local key = fmt(cseq)
  local c = cache[key]
  if c == nil then
    c = claim_get(k, key) or false
    cache[key] = c
  end
  if c and c.expires > now then return c, cc end
  return nil, cc
end

local function fields(f)
  local m = {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  return m
end

-- The stream entry of message `seq`: body, created, ttl, delay, client.
local function entry(k, seq)
  local r = redis.call('XRANGE', k.log, '0-' .. seq, '0-' .. seq)
  if not r[1] then return nil end
  local m = fields(r[1][2])
  m.seq = seq
  return m
end

local function expires_of(k, seq)
  local v = redis.call('ZSCORE', k.exp, seq)
  if v then return tonumber(v) end
  return nil
end

-- Takes message `seq` out of every structure of the queue, and out of the claim holding it
-- (a claim left holding nothing is dropped, as the engine does).
local function remove(k, seq)
  local r = redis.call('XRANGE', k.log, '0-' .. seq, '0-' .. seq)
  local len = 0
  if r[1] then
    local m = fields(r[1][2])
    len = string.len(m.b or '')
    redis.call('XDEL', k.log, '0-' .. seq)
  end
  local held = redis.call('ZREM', k.exp, seq)
  redis.call('ZREM', k.ready, seq)
  redis.call('ZREM', k.dl, seq)
  redis.call('ZREM', k.cl, seq)
  local cseq = state(k, seq)
  redis.call('HDEL', k.st, seq)
  if cseq ~= 0 then
    local c = claim_get(k, fmt(cseq))
    if c then
      local left = {}
      for _, s in ipairs(c.seqs) do
        if s ~= seq then left[#left + 1] = s end
      end
      if #left == 0 then
        redis.call('HDEL', k.c, c.seq)
        redis.call('ZREM', k.ce, c.seq)
      else
        c.seqs = left
        claim_put(k, c)
      end
    end
  end
  if held == 1 or r[1] then
    redis.call('HINCRBY', k.q, 'n', -1)
    redis.call('HINCRBY', k.q, 'nb', -len)
  end
end

-- Redis keeps empty streams; an idle queue must cost only its `:q` hash.
local function settle(k)
  if redis.call('XLEN', k.log) == 0 then redis.call('DEL', k.log) end
  if redis.call('XLEN', k.dead) == 0 then redis.call('DEL', k.dead) end
end

-- The bounded lazy sweep: ends expired claims (their messages become claimable), moves
-- messages whose delay is over to :ready, removes expired messages. Returns whether messages
-- became claimable (worth a wake-up).
local function maintain(k, now)
  local woke = false
  local ended = redis.call('ZRANGEBYSCORE', k.ce, '-inf', fmt(now), 'LIMIT', 0, CLAIM_SWEEP)
  for _, cseq in ipairs(ended) do
    local c = claim_get(k, cseq)
    if c then
      for _, s in ipairs(c.seqs) do
        local owner, cc = state(k, s)
        if fmt(owner) == cseq then
          redis.call('HSET', k.st, s, '0:' .. fmt(cc))
          redis.call('ZREM', k.cl, s)
          if redis.call('ZSCORE', k.exp, s) then
            redis.call('ZADD', k.ready, s, s)
            woke = true
          end
        end
      end
      redis.call('HDEL', k.c, cseq)
    end
    redis.call('ZREM', k.ce, cseq)
  end
  local due = redis.call('ZRANGEBYSCORE', k.dl, '-inf', fmt(now), 'LIMIT', 0, SWEEP)
  for _, s in ipairs(due) do
    redis.call('ZREM', k.dl, s)
    redis.call('ZADD', k.ready, s, s)
    woke = true
  end
  local expired = redis.call('ZRANGEBYSCORE', k.exp, '-inf', fmt(now), 'LIMIT', 0, SWEEP)
  for _, s in ipairs(expired) do remove(k, s) end
  return woke
end

local function wake(k, what)
  redis.call('SPUBLISH', k.n, what)
end

-- Ms from `now` until a message that is not claimable now becomes claimable (a claim expiring,
-- a delay ending before the message expires), or -1 when nothing is scheduled.
local function next_change(k, now)
  local best = nil
  local c = redis.call('ZRANGEBYSCORE', k.cl, '(' .. fmt(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if c[2] then best = tonumber(c[2]) end
  local d = redis.call('ZRANGEBYSCORE', k.dl, '(' .. fmt(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 16)
  for i = 1, #d, 2 do
    local at = tonumber(d[i + 1])
    if best and at >= best then break end
    local ex = expires_of(k, d[i])
    if ex and at < ex then
      best = at
      break
    end
  end
  if best == nil then return -1 end
  return best - now
end

-- Up to `limit` claimable messages, oldest first: {seq, expires} each. Expired ones met on the
-- way are removed; a member of :ready that a live claim holds (never expected) is put back
-- where it belongs.
local function candidates(k, limit, now)
  local out = {}
  local examined = 0
  local cache = {}
  while #out < limit and examined < SCAN do
    local batch = redis.call('ZRANGE', k.ready, #out, limit - 1)
    if #batch == 0 then break end
    local progressed = false
    for _, s in ipairs(batch) do
      examined = examined + 1
      local ex = expires_of(k, s)
      if ex and ex > now then
        local holder = live_claim(k, cache, s, now)
        if holder then
          redis.call('ZREM', k.ready, s)
          redis.call('ZADD', k.cl, fmt(holder.expires), s)
          progressed = true
        else
          out[#out + 1] = { seq = s, expires = ex }
        end
      else
        remove(k, s)
        progressed = true
      end
    end
    if not progressed then break end
  end
  return out
end

local function push_message(out, m, cc)
  out[#out + 1] = tonumber(m.seq)
  out[#out + 1] = tonumber(m.c) or 0
  out[#out + 1] = tonumber(m.t) or 0
  out[#out + 1] = cc
  out[#out + 1] = m.b or ''
end

-- A new incarnation: the epoch after the tombstone's, or the caller's seed for a first one.
local function create(k, seed)
  local old = hnum(k.q, 'e')
  local epoch
  if old then epoch = old % 4294967295 + 1 else epoch = seed end
  redis.call('DEL', k.q)
  redis.call('HSET', k.q, 'x', '1', 'e', fmt(epoch), 's', '0', 'cs', '0', 'n', '0', 'nb', '0', 'v', '0')
  return epoch
end

local SETTINGS = { 'ttl', 'delay', 'maxpost', 'maxcc', 'dlq', 'dlqttl' }

-- Stores metadata JSON (empty: none) and its parsed reserved keys (args[first..first+5], ''
-- for unset), and bumps the version.
local function set_meta(k, json, args, first)
  if json == '' then
    redis.call('HDEL', k.q, 'm')
  else
    redis.call('HSET', k.q, 'm', json)
  end
  for i, name in ipairs(SETTINGS) do
    local v = args[first + i - 1]
    if v == nil or v == '' then
      redis.call('HDEL', k.q, name)
    else
      redis.call('HSET', k.q, name, v)
    end
  end
  redis.call('HINCRBY', k.q, 'v', 1)
end

-- Appends messages {ttl, delay_ms, body}, all of them: ids and markers are assigned here,
-- atomically with the appends. Returns the first seq.
local function append(k, now, client, items)
  local count = #items
  local bytes = 0
  local last = redis.call('HINCRBY', k.q, 's', count)
  local first = last - count + 1
  for i, it in ipairs(items) do
    local s = fmt(first + i - 1)
    redis.call('XADD', k.log, '0-' .. s, 'b', it.body, 'c', fmt(now), 't', fmt(it.ttl),
      'd', fmt(it.delay), 'u', client)
    local expires = math.max(now + it.ttl * 1000, 1)
    redis.call('ZADD', k.exp, fmt(expires), s)
    if it.delay > 0 then
      redis.call('ZADD', k.dl, fmt(now + it.delay), s)
    else
      redis.call('ZADD', k.ready, s, s)
    end
    bytes = bytes + string.len(it.body)
  end
  redis.call('HINCRBY', k.q, 'n', count)
  redis.call('HINCRBY', k.q, 'nb', bytes)
  wake(k, fmt(last))
  return first
end

-- ---------------------------------------------------------------------------------------------
-- Queues
-- ---------------------------------------------------------------------------------------------

-- ARGV: seed, has_meta (0/1), json, ttl, delay, maxpost, maxcc, dlq, dlqttl.
-- Returns 1 when it created the queue, 0 when it existed (metadata replaced if given).
local function f_create(keys, args)
  local k = keys_of(keys[1])
  local seed = arg_num(args[1], 'seed')
  local created = 0
  if not exists(k) then
    create(k, seed)
    created = 1
  end
  if args[2] == '1' then set_meta(k, args[3] or '', args, 4) end
  return created
end

-- Returns {exists, version, json, dlq}.
local function f_meta(keys, args)
  local k = keys_of(keys[1])
  if not exists(k) then return { 0, 0, '', '' } end
  local r = redis.call('HMGET', k.q, 'v', 'm', 'dlq')
  return { 1, tonumber(r[1]) or 0, r[2] or '', r[3] or '' }
end

-- Compare-and-set of the metadata. ARGV: version, json, ttl, delay, maxpost, maxcc, dlq, dlqttl.
local function f_set_meta(keys, args)
  local k = keys_of(keys[1])
  if not exists(k) then return fail('MQ_NOQUEUE') end
  local v = hnum(k.q, 'v') or 0
  if v ~= arg_num(args[1], 'version') then return redis.status_reply('MQ_RETRY') end
  set_meta(k, args[2] or '', args, 3)
  return 1
end

-- Deletes the queue, keeping its epoch as a tombstone. Returns 1 if it existed.
local function f_drop(keys, args)
  local k = keys_of(keys[1])
  local existed = exists(k)
  local epoch = redis.call('HGET', k.q, 'e')
  redis.call('DEL', k.log, k.exp, k.ready, k.dl, k.cl, k.st, k.c, k.ce, k.dead, k.src, k.q)
  if epoch then redis.call('HSET', k.q, 'e', epoch) end
  if existed then return 1 end
  return 0
end

-- Empties the queue (claimed messages and claims too); counters, epoch and metadata stay.
local function f_purge(keys, args)
  local k = keys_of(keys[1])
  if not exists(k) then return 0 end
  redis.call('DEL', k.log, k.exp, k.ready, k.dl, k.cl, k.st, k.c, k.ce)
  redis.call('HSET', k.q, 'n', '0', 'nb', '0')
  return 1
end

-- Returns {exists, messages, body bytes}.
local function f_held(keys, args)
  local k = keys_of(keys[1])
  if not exists(k) then return { 0, 0, 0 } end
  local r = redis.call('HMGET', k.q, 'n', 'nb')
  return { 1, tonumber(r[1]) or 0, tonumber(r[2]) or 0 }
end

-- Returns {now, epoch, claimed, total, oldest seq, oldest created, newest seq, newest created}
-- (epoch 0: no queue; seq 0: no message).
local function f_stats(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return { now, 0, 0, 0, 0, 0, 0, 0 } end
  if maintain(k, now) then wake(k, 'sweep') end
  settle(k)
  local epoch = hnum(k.q, 'e') or 0
  local total = redis.call('ZCOUNT', k.exp, '(' .. fmt(now), '+inf')
  local claimed = redis.call('ZCOUNT', k.cl, '(' .. fmt(now), '+inf')
  local function first_live(cmd, from, to)
    local cursor = from
    local examined = 0
    while examined < SCAN do
      local r = redis.call(cmd, k.log, cursor, to, 'COUNT', 32)
      if #r == 0 then return 0, 0 end
      for _, e in ipairs(r) do
        examined = examined + 1
        local seq = string.sub(e[1], 3)
        local ex = expires_of(k, seq)
        if ex and ex > now then
          return tonumber(seq), tonumber(fields(e[2]).c) or 0
        end
        cursor = '(' .. e[1]
      end
    end
    return 0, 0
  end
  local o_seq, o_c, n_seq, n_c = 0, 0, 0, 0
  if total > 0 then
    o_seq, o_c = first_live('XRANGE', '-', '+')
    n_seq, n_c = first_live('XREVRANGE', '+', '-')
  end
  return { now, epoch, claimed, total, o_seq, o_c, n_seq, n_c }
end

-- ---------------------------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------------------------

-- The checks of a post before anything is written: size, then the quotas (queue exact,
-- project as the caller estimated the other queues), in the engine's order.
local function post_checks(k, live, request_bytes, config_max, add_n, add_b, q)
  local maxpost = live and hnum(k.q, 'maxpost') or nil
  if maxpost and request_bytes > math.min(maxpost, config_max) then
    return fail('MQ_POSTSIZE', fmt(maxpost))
  end
  if request_bytes > config_max then return fail('MQ_POSTSIZE', '0') end
  local n, nb = 0, 0
  if live then
    n = hnum(k.q, 'n') or 0
    nb = hnum(k.q, 'nb') or 0
  end
  local checks = {
    { 'messages_per_queue', n, add_n, q.qm }, { 'bytes_per_queue', nb, add_b, q.qb },
    { 'messages_per_project', n + q.pm_held, add_n, q.pm },
    { 'bytes_per_project', nb + q.pb_held, add_b, q.pb },
  }
  for _, c in ipairs(checks) do
    if c[4] > 0 and c[2] + c[3] > c[4] then return fail('MQ_QUOTA', c[1] .. ' ' .. fmt(c[4])) end
  end
  return nil
end

-- ARGV: client, request_bytes, config_max_post, config_default_ttl, create (0: may not create
-- the queue, 1: may, but answer MQ_CREATE without writing so the caller lists it in the
-- project index first, 2: create it), seed, quota messages/bytes per queue, per project, the
-- project's other queues' messages/bytes, n, then (ttl or '', delay or '', body) per message.
-- Returns {created, epoch, first seq, n}.
local function f_post(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  local live = exists(k)
  if live then maintain(k, now) end
  local request_bytes = arg_num(args[2], 'request_bytes')
  local config_max = arg_num(args[3], 'config_max_post')
  local count = arg_num(args[13], 'count')
  if #args ~= 13 + 3 * count then return fail('MQ_ARG', 'message triples do not match the count') end
  local add_b = 0
  for i = 0, count - 1 do add_b = add_b + string.len(args[16 + 3 * i]) end
  local q = { qm = arg_num(args[7], 'qm'), qb = arg_num(args[8], 'qb'), pm = arg_num(args[9], 'pm'),
              pb = arg_num(args[10], 'pb'), pm_held = arg_num(args[11], 'pmh'),
              pb_held = arg_num(args[12], 'pbh') }
  local refused = post_checks(k, live, request_bytes, config_max, count, add_b, q)
  if refused then return refused end
  local created = 0
  if not live then
    if args[5] == '0' then return fail('MQ_NOQUEUE') end
    if args[5] ~= '2' then return redis.status_reply('MQ_CREATE') end
    create(k, arg_num(args[6], 'seed'))
    created = 1
  end
  local default_ttl = hnum(k.q, 'ttl') or arg_num(args[4], 'config_default_ttl')
  local default_delay = hnum(k.q, 'delay') or 0
  local items = {}
  for i = 0, count - 1 do
    local ttl = args[14 + 3 * i]
    local delay = args[15 + 3 * i]
    local t = default_ttl
    if ttl ~= '' then t = arg_num(ttl, 'ttl') end
    local d = default_delay
    if delay ~= '' then d = arg_num(delay, 'delay') end
    items[#items + 1] = { ttl = t, delay = math.min(d * 1000, 4294967295), body = args[16 + 3 * i] }
  end
  local epoch = hnum(k.q, 'e') or 0
  local first = 0
  if count > 0 then first = append(k, now, args[1], items) end
  settle(k)
  return { created, epoch, first, count }
end

-- Dead letters arriving from another queue of the project, each once. ARGV: create (1 or 2 as
-- for f_post), seed, source queue, n, then (source message id, ttl, body) per letter.
-- Returns {created, epoch, first seq, appended}.
local function f_post_dead(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  local live = exists(k)
  local count = arg_num(args[4], 'count')
  if #args ~= 4 + 3 * count then return fail('MQ_ARG', 'letter triples do not match the count') end
  local items = {}
  local names = {}
  if live then
    maintain(k, now)
    local old = redis.call('ZRANGEBYSCORE', k.src, '-inf', fmt(now - DEDUPE_MS), 'LIMIT', 0, SWEEP)
    for _, m in ipairs(old) do redis.call('ZREM', k.src, m) end
  end
  for i = 0, count - 1 do
    local name = args[3] .. '/' .. args[5 + 3 * i]
    if not (live and redis.call('ZSCORE', k.src, name)) then
      items[#items + 1] = { ttl = arg_num(args[6 + 3 * i], 'ttl'), delay = 0, body = args[7 + 3 * i] }
      names[#names + 1] = name
    end
  end
  local created = 0
  if #items > 0 and not live then
    if args[1] ~= '2' then return redis.status_reply('MQ_CREATE') end
    create(k, arg_num(args[2], 'seed'))
    created = 1
  end
  local first = 0
  if #items > 0 then
    first = append(k, now, CLIENT_NONE, items)
    for _, name in ipairs(names) do redis.call('ZADD', k.src, fmt(now), name) end
  end
  settle(k)
  return { created, hnum(k.q, 'e') or 0, first, #items }
end

-- ARGV: after seq, limit, client, echo, include_claimed, include_delayed (0/1).
-- Returns {now, epoch, n, (seq, created, ttl, deliveries, body, claim seq, claim secret) × n,
-- next change in ms or -1}.
local function f_list(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return { now, 0, 0, -1 } end
  if maintain(k, now) then wake(k, 'sweep') end
  settle(k)
  local epoch = hnum(k.q, 'e') or 0
  local after = fmt(arg_num(args[1], 'after'))
  local limit = arg_num(args[2], 'limit')
  local client = args[3]
  local echo, with_claimed, with_delayed = args[4] == '1', args[5] == '1', args[6] == '1'
  local out = { now, epoch, 0 }
  local found = 0
  local cursor = '(0-' .. after
  local examined = 0
  local cache = {}
  while found < limit and examined < SCAN do
    local r = redis.call('XRANGE', k.log, cursor, '+', 'COUNT', math.max(limit - found, 16))
    if #r == 0 then break end
    for _, e in ipairs(r) do
      examined = examined + 1
      cursor = '(' .. e[1]
      local m = fields(e[2])
      m.seq = string.sub(e[1], 3)
      local ex = expires_of(k, m.seq)
      local skip = not ex or ex <= now
      if not skip and not echo and m.u == client then skip = true end
      if not skip and not with_delayed then
        skip = (tonumber(m.c) or 0) + (tonumber(m.d) or 0) > now
      end
      local holder, cc = nil, 0
      if not skip then
        holder, cc = live_claim(k, cache, m.seq, now)
        if holder and not with_claimed then skip = true end
      end
      if not skip then
        push_message(out, m, cc)
        if holder then
          out[#out + 1] = tonumber(holder.seq)
          out[#out + 1] = holder.secret
        else
          out[#out + 1] = 0
          out[#out + 1] = ''
        end
        found = found + 1
        if found >= limit then break end
      end
    end
  end
  out[3] = found
  if found == 0 then out[#out + 1] = next_change(k, now) else out[#out + 1] = -1 end
  return out
end

-- ARGV: (epoch, seq) pairs, distinct, in the order asked; ids of another incarnation name
-- nothing. Returns as f_list, without the next change.
local function f_get(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return { now, 0, 0 } end
  if maintain(k, now) then wake(k, 'sweep') end
  settle(k)
  local epoch = hnum(k.q, 'e') or 0
  local out = { now, epoch, 0 }
  local found = 0
  local cache = {}
  for i = 1, #args - 1, 2 do
    local s = fmt(arg_num(args[i + 1], 'seq'))
    local ex = arg_num(args[i], 'epoch') == epoch and expires_of(k, s)
    local m = ex and ex > now and entry(k, s)
    if m then
      local holder, cc = live_claim(k, cache, s, now)
      push_message(out, m, cc)
      if holder then
        out[#out + 1] = tonumber(holder.seq)
        out[#out + 1] = holder.secret
      else
        out[#out + 1] = 0
        out[#out + 1] = ''
      end
      found = found + 1
    end
  end
  out[3] = found
  return out
end

-- The claim rules of one delete (the engine's delete_message, in its order). Returns nil when
-- the message may go, else an error reply.
local function may_delete(k, cache, seq, now, cseq, secret)
  local holder = live_claim(k, cache, seq, now)
  if cseq == '' then
    if holder then return fail('MQ_CLAIMED') end
    return nil
  end
  if not holder then return fail('MQ_NOTCLAIMED') end
  if holder.seq == cseq and same_secret(holder.secret, secret) then return nil end
  local named = claim_get(k, cseq)
  if named and named.expires > now and same_secret(named.secret, secret) then return fail('MQ_CLAIMED') end
  return fail('MQ_MISMATCH')
end

-- ARGV: epoch, seq, claim seq or '', claim secret or ''. Returns 1 if deleted, 0 if absent.
local function f_delete(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return 0 end
  maintain(k, now)
  if arg_num(args[1], 'epoch') ~= hnum(k.q, 'e') then
    settle(k)
    return 0
  end
  local s = fmt(arg_num(args[2], 'seq'))
  local ex = expires_of(k, s)
  if not ex or ex <= now then
    settle(k)
    return 0
  end
  local cseq = args[3] or ''
  if cseq ~= '' then cseq = fmt(arg_num(cseq, 'claim')) end
  local refused = may_delete(k, {}, s, now, cseq, args[4] or '')
  if refused then
    settle(k)
    return refused
  end
  remove(k, s)
  settle(k)
  return 1
end

-- ARGV: check (0/1), n claims, (claim seq, secret) × n, then (epoch, seq) pairs. With check,
-- every listed live message held by a live claim must be held by one of the claims given, or
-- nothing is deleted (MQ_CLAIMED). Returns how many were deleted.
local function f_delete_many(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return 0 end
  maintain(k, now)
  local epoch = hnum(k.q, 'e')
  local check = args[1] == '1'
  local nclaims = arg_num(args[2], 'claims')
  local given = {}
  for i = 0, nclaims - 1 do
    given[fmt(arg_num(args[3 + 2 * i], 'claim'))] = args[4 + 2 * i]
  end
  local seqs = {}
  for i = 3 + 2 * nclaims, #args - 1, 2 do
    local s = fmt(arg_num(args[i + 1], 'seq'))
    local ex = arg_num(args[i], 'epoch') == epoch and expires_of(k, s)
    if ex and ex > now then seqs[#seqs + 1] = s end
  end
  if check then
    local cache = {}
    for _, s in ipairs(seqs) do
      local holder = live_claim(k, cache, s, now)
      if holder and not same_secret(given[holder.seq], holder.secret) then
        settle(k)
        return fail('MQ_CLAIMED')
      end
    end
  end
  local deleted = 0
  for _, s in ipairs(seqs) do
    if redis.call('ZSCORE', k.exp, s) then
      remove(k, s)
      deleted = deleted + 1
    end
  end
  settle(k)
  return deleted
end

-- ARGV: limit. Removes and returns up to `limit` claimable messages, oldest first.
-- Returns {now, epoch, n, (seq, created, ttl, deliveries, body) × n}.
local function f_pop(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return { now, 0, 0 } end
  maintain(k, now)
  local epoch = hnum(k.q, 'e') or 0
  local out = { now, epoch, 0 }
  local n = 0
  for _, c in ipairs(candidates(k, arg_num(args[1], 'limit'), now)) do
    local m = entry(k, c.seq)
    if m then
      local _, cc = state(k, c.seq)
      push_message(out, m, cc)
      n = n + 1
    end
    remove(k, c.seq)
  end
  out[3] = n
  settle(k)
  return out
end

-- ---------------------------------------------------------------------------------------------
-- Claims
-- ---------------------------------------------------------------------------------------------

-- ARGV: ttl s, grace s, limit, secret (16 hex digits).
-- Returns {now, epoch, claim seq (0: none), n, (seq, created, ttl, deliveries, body) × n,
-- d, (dead letter id, dlq, source seq, ttl, body) × d, next change in ms or -1}.
-- A candidate already delivered _max_claim_count times (with a _dead_letter_queue) moves to
-- :dead instead, counting against the limit; the letters returned are every one waiting
-- (up to DEAD_BATCH), also those of earlier claims whose move did not finish.
local function f_claim(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return { now, 0, 0, 0, 0, -1 } end
  maintain(k, now)
  local ttl = arg_num(args[1], 'ttl')
  local grace = arg_num(args[2], 'grace')
  local limit = arg_num(args[3], 'limit')
  local secret = args[4]
  if not string.match(secret or '', '^%x+$') then return fail('MQ_ARG', 'bad secret') end
  local epoch = hnum(k.q, 'e') or 0
  local dlq = redis.call('HGET', k.q, 'dlq')
  local maxcc = hnum(k.q, 'maxcc')
  local dlqttl = hnum(k.q, 'dlqttl')
  local delivered, moved = {}, {}
  for _, c in ipairs(candidates(k, limit, now)) do
    local _, cc = state(k, c.seq)
    c.cc = cc
    if dlq and maxcc and cc >= maxcc then moved[#moved + 1] = c else delivered[#delivered + 1] = c end
  end
  local out = { now, epoch, 0, 0 }
  if #delivered > 0 then
    local cseq = redis.call('HINCRBY', k.q, 'cs', 1)
    local expires = now + ttl * 1000
    local keep = expires + grace * 1000
    local claim = { seq = fmt(cseq), secret = secret, renewed = now, expires = expires, ttl = ttl,
                    grace = grace, seqs = {} }
    for _, c in ipairs(delivered) do
      local m = entry(k, c.seq)
      redis.call('HSET', k.st, c.seq, fmt(cseq) .. ':' .. fmt(c.cc + 1))
      redis.call('ZADD', k.exp, fmt(math.max(c.expires, keep)), c.seq)
      redis.call('ZREM', k.ready, c.seq)
      redis.call('ZADD', k.cl, fmt(expires), c.seq)
      claim.seqs[#claim.seqs + 1] = c.seq
      if m then push_message(out, m, c.cc + 1) end
    end
    claim_put(k, claim)
    redis.call('ZADD', k.ce, fmt(expires), claim.seq)
    out[3] = cseq
    out[4] = (#out - 4) / 5
  end
  for _, c in ipairs(moved) do
    local m = entry(k, c.seq)
    if m then
      redis.call('XADD', k.dead, '*', 'q', dlq, 's', c.seq, 't', fmt(dlqttl or tonumber(m.t) or 0),
        'b', m.b or '')
    end
    remove(k, c.seq)
  end
  local dead = redis.call('XRANGE', k.dead, '-', '+', 'COUNT', DEAD_BATCH)
  out[#out + 1] = #dead
  for _, e in ipairs(dead) do
    local f = fields(e[2])
    out[#out + 1] = e[1]
    out[#out + 1] = f.q or ''
    out[#out + 1] = tonumber(f.s) or 0
    out[#out + 1] = tonumber(f.t) or 0
    out[#out + 1] = f.b or ''
  end
  if #delivered == 0 then out[#out + 1] = next_change(k, now) else out[#out + 1] = -1 end
  settle(k)
  return out
end

-- ARGV: dead letter ids (as f_claim returned them) now posted to their DLQ.
local function f_dead_ack(keys, args)
  local k = keys_of(keys[1])
  local n = 0
  if #args > 0 then n = redis.call('XDEL', k.dead, unpack(args)) end
  settle(k)
  return n
end

-- ARGV: claim seq, secret. Returns {now, epoch, renewed ms, ttl, n, (seq, created, ttl,
-- deliveries, body) × n}, or MQ_NOCLAIM.
local function f_get_claim(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return fail('MQ_NOCLAIM') end
  if maintain(k, now) then wake(k, 'sweep') end
  settle(k)
  local cseq = fmt(arg_num(args[1], 'claim'))
  local c = claim_get(k, cseq)
  if not c or c.expires <= now or not same_secret(c.secret, args[2]) then return fail('MQ_NOCLAIM') end
  local out = { now, hnum(k.q, 'e') or 0, c.renewed, c.ttl, 0 }
  local n = 0
  for _, s in ipairs(c.seqs) do
    local ex = expires_of(k, s)
    local m = ex and ex > now and entry(k, s)
    if m then
      local _, cc = state(k, s)
      push_message(out, m, cc)
      n = n + 1
    end
  end
  out[5] = n
  return out
end

-- ARGV: claim seq, secret, ttl s, grace s. Restarts a live claim; MQ_NOCLAIM if there is none.
local function f_renew(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return fail('MQ_NOCLAIM') end
  maintain(k, now)
  settle(k)
  local cseq = fmt(arg_num(args[1], 'claim'))
  local c = claim_get(k, cseq)
  if not c or c.expires <= now or not same_secret(c.secret, args[2]) then return fail('MQ_NOCLAIM') end
  c.ttl = arg_num(args[3], 'ttl')
  c.grace = arg_num(args[4], 'grace')
  c.renewed = now
  c.expires = now + c.ttl * 1000
  local keep = c.expires + c.grace * 1000
  for _, s in ipairs(c.seqs) do
    local owner = state(k, s)
    local ex = expires_of(k, s)
    if fmt(owner) == cseq and ex then
      if keep > ex then redis.call('ZADD', k.exp, fmt(keep), s) end
      redis.call('ZADD', k.cl, fmt(c.expires), s)
    end
  end
  claim_put(k, c)
  redis.call('ZADD', k.ce, fmt(c.expires), cseq)
  return 1
end

-- ARGV: claim seq, secret. Ends the claim now; unknown claims are fine. Returns 1 if released.
local function f_release(keys, args)
  local k = keys_of(keys[1])
  local now = now_ms()
  if not exists(k) then return 0 end
  local cseq = fmt(arg_num(args[1], 'claim'))
  local c = claim_get(k, cseq)
  local released = 0
  if c and same_secret(c.secret, args[2]) then
    for _, s in ipairs(c.seqs) do
      local owner, cc = state(k, s)
      if fmt(owner) == cseq then
        redis.call('HSET', k.st, s, '0:' .. fmt(cc))
        redis.call('ZREM', k.cl, s)
        if redis.call('ZSCORE', k.exp, s) then redis.call('ZADD', k.ready, s, s) end
      end
    end
    redis.call('HDEL', k.c, cseq)
    redis.call('ZREM', k.ce, cseq)
    released = 1
  end
  maintain(k, now)
  settle(k)
  if released == 1 then wake(k, 'release') end
  return released
end

-- The sweep alone, for a background sweeper of idle queues. Returns 1 if the queue exists.
-- Returns the messages the queue holds after the sweep, or -1 when there is no queue.
local function f_sweep(keys, args)
  local k = keys_of(keys[1])
  if not exists(k) then return -1 end
  if maintain(k, now_ms()) then wake(k, 'sweep') end
  settle(k)
  return tonumber(redis.call('HGET', k.q, 'n') or 0)
end

-- ---------------------------------------------------------------------------------------------
-- Project index: KEYS[1] = `<prefix>:{<project>}:queues`, a zset of names (score 0, lex order)
-- ---------------------------------------------------------------------------------------------

local function f_index_add(keys, args)
  return redis.call('ZADD', keys[1], 0, args[1])
end

local function f_index_del(keys, args)
  return redis.call('ZREM', keys[1], args[1])
end

-- ARGV: after ('' for the start), limit. Names strictly after `after`, in byte order.
local function f_index_range(keys, args)
  local from = '-'
  if args[1] ~= '' then from = '(' .. args[1] end
  return redis.call('ZRANGE', keys[1], from, '+', 'BYLEX', 'LIMIT', 0, arg_num(args[2], 'limit'))
end

local function f_index_count(keys, args)
  return redis.call('ZCARD', keys[1])
end

-- ---------------------------------------------------------------------------------------------
-- Revocations: KEYS[1] = `<prefix>:{revocations}`; :r hash subject -> "revoked:until",
-- :u zset subject -> until (for pruning). A subject is `<len(project)>:<project><subject>`.
-- ---------------------------------------------------------------------------------------------

local function prune_revocations(r, u, now)
  local ended = redis.call('ZRANGEBYSCORE', u, '-inf', fmt(now), 'LIMIT', 0, SWEEP)
  for _, f in ipairs(ended) do
    redis.call('HDEL', r, f)
    redis.call('ZREM', u, f)
  end
end

-- ARGV: subject, revoked ms, until ms, max. MQ_FULL when a new subject finds `max` kept.
local function f_revoke(keys, args)
  local r, u = keys[1] .. ':r', keys[1] .. ':u'
  prune_revocations(r, u, now_ms())
  local subject = args[1]
  local revoked = arg_num(args[2], 'revoked')
  local til = arg_num(args[3], 'until')
  local cur = redis.call('HGET', r, subject)
  if cur then
    local a, b = string.match(cur, '^(%d+):(%d+)$')
    revoked = math.max(revoked, tonumber(a) or 0)
    til = math.max(til, tonumber(b) or 0)
  elseif redis.call('HLEN', r) >= arg_num(args[4], 'max') then
    return fail('MQ_FULL', args[4])
  end
  redis.call('HSET', r, subject, fmt(revoked) .. ':' .. fmt(til))
  redis.call('ZADD', u, fmt(til), subject)
  return 1
end

-- Returns {subject, "revoked:until", ...} of the revocations still in force.
local function f_revocations(keys, args)
  local r = keys[1] .. ':r'
  local now = now_ms()
  local all = redis.call('HGETALL', r)
  local out = {}
  for i = 1, #all, 2 do
    local _, b = string.match(all[i + 1], '^(%d+):(%d+)$')
    if b and tonumber(b) > now then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end

local WRITE = {}
local FREEING = { 'allow-oom' }
local READ = { 'no-writes', 'allow-oom' }

local FUNCTIONS = {
  { 'mqv1_create', f_create, WRITE }, { 'mqv1_meta', f_meta, READ },
  { 'mqv1_set_meta', f_set_meta, WRITE }, { 'mqv1_drop', f_drop, FREEING },
  { 'mqv1_purge', f_purge, FREEING }, { 'mqv1_held', f_held, READ },
  { 'mqv1_stats', f_stats, FREEING }, { 'mqv1_post', f_post, WRITE },
  { 'mqv1_post_dead', f_post_dead, WRITE }, { 'mqv1_list', f_list, FREEING },
  { 'mqv1_get', f_get, FREEING }, { 'mqv1_delete', f_delete, FREEING },
  { 'mqv1_delete_many', f_delete_many, FREEING }, { 'mqv1_pop', f_pop, FREEING },
  { 'mqv1_claim', f_claim, FREEING }, { 'mqv1_dead_ack', f_dead_ack, FREEING },
  { 'mqv1_get_claim', f_get_claim, FREEING }, { 'mqv1_renew', f_renew, FREEING },
  { 'mqv1_release', f_release, FREEING }, { 'mqv1_sweep', f_sweep, FREEING },
  { 'mqv1_index_add', f_index_add, WRITE }, { 'mqv1_index_del', f_index_del, FREEING },
  { 'mqv1_index_range', f_index_range, READ }, { 'mqv1_index_count', f_index_count, READ },
  { 'mqv1_revoke', f_revoke, WRITE }, { 'mqv1_revocations', f_revocations, READ },
}

for i = 1, #FUNCTIONS do
  local f = FUNCTIONS[i]
  redis.register_function { function_name = f[1], callback = f[2], flags = f[3] }
end
