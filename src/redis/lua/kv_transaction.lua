-- KeyValue.Transaction: guards, then operations, all or nothing.
--
-- Redis does not roll back a script that fails half-way, so nothing is written until every
-- operation has been checked against a shadow of the keys it touches (types, integer values,
-- 64-bit overflow). Only then are the operations applied.
--
-- KEYS: the distinct keys. ARGV, read in order:
--   guard count, then per guard: kind, key index, field, value
--   op count, then per op: kind, key index, and
--     set: value, ttl ms or ''   | delete: -         | expire: ttl ms | incrby: delta
--     hset: n, field, value, ... | hdel: n, field... | hincrby: field, delta
-- Returns {0, failed guard index (from 0)} or {1, {result strings, one per op}}.
-- Errors: 'GWARG <field> <reason>' (bad input) and 'GWTYPE <reason>' (type clash).

local pos = 1
local function take()
  local value = ARGV[pos]
  pos = pos + 1
  return value
end

-- Integer strings as Redis writes them: optional '-', digits, at most 20 characters.
local function is_int(text)
  return text ~= nil and #text <= 20 and string.match(text, '^-?%d+$') ~= nil
end

-- Exact comparison of two integer strings (doubles lose precision past 2^53).
local function canonical(text)
  local negative = string.sub(text, 1, 1) == '-'
  local digits = negative and string.sub(text, 2) or text
  digits = string.gsub(digits, '^0+', '')
  if digits == '' then
    return false, '0'
  end
  return negative, digits
end
local function compare(a, b)
  local a_negative, a_digits = canonical(a)
  local b_negative, b_digits = canonical(b)
  if a_negative ~= b_negative then
    return a_negative and -1 or 1
  end
  local order
  if #a_digits ~= #b_digits then
    order = (#a_digits < #b_digits) and -1 or 1
  elseif a_digits == b_digits then
    order = 0
  else
    order = (a_digits < b_digits) and -1 or 1
  end
  return a_negative and -order or order
end

-- 1. Guards.
local guard_count = tonumber(take())
for i = 1, guard_count do
  local kind, key, field, value = take(), KEYS[tonumber(take())], take(), take()
  local holds
  if kind == 'exists' then
    holds = redis.call('EXISTS', key) == 1
  elseif kind == 'absent' then
    holds = redis.call('EXISTS', key) == 0
  elseif kind == 'value_equals' then
    holds = redis.call('TYPE', key)['ok'] == 'string' and redis.call('GET', key) == value
  elseif kind == 'hash_field_equals' then
    holds = redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HGET', key, field) == value
  else
    -- hash_field_at_least / hash_field_at_most: a missing hash or field counts as 0.
    local key_type = redis.call('TYPE', key)['ok']
    local current
    if key_type == 'none' then
      current = '0'
    elseif key_type == 'hash' then
      current = redis.call('HGET', key, field) or '0'
    end
    if not is_int(current) then
      holds = false
    elseif kind == 'hash_field_at_least' then
      holds = compare(current, value) >= 0
    else
      holds = compare(current, value) <= 0
    end
  end
  if not holds then
    return {0, i - 1}
  end
end

-- 2. Check every operation against a shadow of the keys, writing nothing.
-- A result beyond this magnitude may not fit in 64 bits (doubles are exact to about 2^10 here).
local SAFE_LIMIT = 9223372036854771712
local shadows = {}
local function shadow(key)
  local entry = shadows[key]
  if entry == nil then
    local key_type = redis.call('TYPE', key)['ok']
    -- fresh: the shadow knows every field (the key is new or was replaced in this script).
    entry = { type = key_type, fields = {}, fresh = (key_type == 'none') }
    shadows[key] = entry
  end
  return entry
end

-- The current integer of a string counter or hash field (nil + reason when not an integer).
local function add_checked(current_text, current_number, delta, label)
  local current = current_number
  if current == nil then
    if not is_int(current_text) then
      return nil, 'GWARG ' .. label .. ' the stored value is not an integer'
    end
    current = tonumber(current_text)
  end
  local result = current + tonumber(delta)
  if result >= SAFE_LIMIT or result <= -SAFE_LIMIT then
    return nil, 'GWARG ' .. label .. '.delta the result would overflow a signed 64-bit integer'
  end
  return result
end

local op_count = tonumber(take())
local ops = {}
for i = 1, op_count do
  local kind, key = take(), KEYS[tonumber(take())]
  local op = { kind = kind, key = key }
  local label = 'ops[' .. (i - 1) .. '].' .. kind
  local entry = shadow(key)
  if kind == 'set' then
    op.value, op.ttl = take(), take()
    entry.type, entry.text, entry.number, entry.fields, entry.fresh = 'string', op.value, nil, {}, true
  elseif kind == 'delete' then
    entry.type, entry.text, entry.number, entry.fields, entry.fresh = 'none', nil, nil, {}, true
  elseif kind == 'expire' then
    op.ttl = take()
  elseif kind == 'incrby' then
    op.delta = take()
    if entry.type ~= 'none' and entry.type ~= 'string' then
      return redis.error_reply('GWTYPE ' .. label .. ': the key holds a ' .. entry.type .. ', not a string counter')
    end
    local current_text = '0'
    if entry.type == 'string' then
      if entry.text == nil and entry.number == nil then
        entry.text = redis.call('GET', key)
      end
      current_text = entry.text
    end
    local result, problem = add_checked(current_text, entry.number, op.delta, label)
    if problem then
      return redis.error_reply(problem)
    end
    entry.type, entry.text, entry.number = 'string', nil, result
  else
    if entry.type ~= 'none' and entry.type ~= 'hash' then
      return redis.error_reply('GWTYPE ' .. label .. ': the key holds a ' .. entry.type .. ', not a hash')
    end
    op.args = {}
    if kind == 'hset' then
      for _ = 1, tonumber(take()) do
        local field, value = take(), take()
        op.args[#op.args + 1] = field
        op.args[#op.args + 1] = value
        entry.fields[field] = { text = value }
      end
      entry.type = 'hash'
    elseif kind == 'hdel' then
      for _ = 1, tonumber(take()) do
        local field = take()
        op.args[#op.args + 1] = field
        entry.fields[field] = { gone = true }
      end
    else
      op.field, op.delta = take(), take()
      local known = entry.fields[op.field]
      local current_text, current_number = '0', nil
      if known ~= nil then
        if not known.gone then
          current_text, current_number = known.text, known.number
        end
      elseif not entry.fresh then
        current_text = redis.call('HGET', key, op.field) or '0'
      end
      local result, problem = add_checked(current_text, current_number, op.delta, label)
      if problem then
        return redis.error_reply(problem)
      end
      entry.fields[op.field] = { number = result }
      entry.type = 'hash'
    end
  end
  ops[i] = op
end

-- 3. Apply. Results are strings: counters are read back so they stay exact past 2^53.
local results = {}
for i, op in ipairs(ops) do
  local result
  if op.kind == 'set' then
    if op.ttl ~= '' then
      redis.call('SET', op.key, op.value, 'PX', op.ttl)
    else
      redis.call('SET', op.key, op.value)
    end
    result = '1'
  elseif op.kind == 'delete' then
    result = tostring(redis.call('DEL', op.key))
  elseif op.kind == 'expire' then
    result = tostring(redis.call('PEXPIRE', op.key, op.ttl))
  elseif op.kind == 'incrby' then
    redis.call('INCRBY', op.key, op.delta)
    result = redis.call('GET', op.key)
  elseif op.kind == 'hset' then
    result = tostring(redis.call('HSET', op.key, unpack(op.args)))
  elseif op.kind == 'hdel' then
    result = tostring(redis.call('HDEL', op.key, unpack(op.args)))
  else
    redis.call('HINCRBY', op.key, op.field, op.delta)
    result = redis.call('HGET', op.key, op.field)
  end
  results[i] = result
end
return {1, results}
